"""``python -m tiltstream``: the console command as a module, so ``torchrun -m tiltstream recon train ...`` works.

The command itself lives in :mod:`live.cli`; this shim only gives it the distribution's name.
"""

from live.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
