"""What app teams get: packages and build matrices."""
