"""Widgets of the app: charts, the navigation bar, tables and forms."""
