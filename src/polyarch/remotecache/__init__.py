"""The build cache exported to and imported from a registry or a directory."""
