"""Date formats for English pages: times name their time zone (TIME_ZONE), so no one reads UTC as local."""

DATETIME_FORMAT = "Y-m-d H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
