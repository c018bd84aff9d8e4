"""``python -m tiltstream``: the console command as a module, so ``torchrun -m tiltstream recon train ...`` works."""

from tiltstream.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
