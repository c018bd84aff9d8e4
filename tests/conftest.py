"""Suite-wide settings: Qt renders offscreen, so viewer tests run on machines without a display."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
