"""The GPU section of ``make bench`` on a lent GPU machine: :mod:`.stage_inputs` and ``prepare.sh`` here,
``run.sh`` there (how: ``run.sh``'s header)."""
