"""Transaction log: records, in-RAM log, disk segments, snapshots, recovery."""
