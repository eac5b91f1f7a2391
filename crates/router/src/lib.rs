//! silverback-router (placeholder; filled in by its issue).
