"""Digital cockpit (数字驾驶舱): dashboards for every level, built from registered panels."""
