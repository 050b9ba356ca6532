"""taskboard's domain model."""
