"""Site-specific deployment configuration (robot, cameras, limits, bundle)."""
