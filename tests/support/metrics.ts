/** The metrics every collector must expose at /metrics (issue: "Runs 24/7 on a Mac"). */
export const REQUIRED_METRICS: readonly string[] = [
  "l2_messages_received_total",
  "l2_bytes_received_total",
  "l2_batches_stored_total",
  "l2_upload_failures_total",
  "l2_spool_bytes",
  "l2_spool_batches",
  "l2_reconnects_total",
  "l2_sequence_gaps_total",
  "l2_dropped_messages_total",
  "l2_last_message_age_seconds",
  "l2_ws_connections",
  "process_resident_memory_bytes",
];
