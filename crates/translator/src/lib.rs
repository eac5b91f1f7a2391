//! silverback-translator (placeholder; filled in by its issue).
