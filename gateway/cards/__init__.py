"""Card status: loss reports, replacement, and the blacklist cache terminals and payments use."""
