"""Dates and times for English, the site's language: one unambiguous format on every page,
the admin included, with the offset of the time zone they are shown in."""

DATETIME_FORMAT = "Y-m-d H:i:s O"
SHORT_DATETIME_FORMAT = DATETIME_FORMAT
