"""Network definitions (torch). Imported only by training and export, never by the device path."""
