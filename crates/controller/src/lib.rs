//! silverback-controller (placeholder; filled in by its issue).
