"""The HTTP recommendation service (`sessrec serve`)."""
