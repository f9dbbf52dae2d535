"""Runlog's date formats (FORMAT_MODULE_PATH): the locale's own would win over settings."""
