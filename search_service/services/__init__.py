"""Business logic, framework-free apart from running blocking work off the event loop."""
