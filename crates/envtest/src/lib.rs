//! silverback-envtest (placeholder; filled in by its issue).
