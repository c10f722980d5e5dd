"""Schools, their admins, stores, devices and keys, students and cards, provider settings."""
