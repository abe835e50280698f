"""Dialogs (modal screens), one module per screen that opens them; `base` holds what they share."""
