"""Risks (大平安): rules that watch events, disputes and data, warnings, handling and feedback."""
