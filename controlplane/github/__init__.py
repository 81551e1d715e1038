"""GitHub: webhook checks with no web framework inside, and the App's API client."""
