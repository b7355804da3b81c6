// Package alerting turns findings into alerts, stores them in ClickHouse
// and notifies analysts through Alertmanager, a Standard Webhooks
// endpoint, Slack and syslog/CEF.
//
// # Use
//
//	mgr, err := alerting.New(cfg.Alerting, alerting.Options{
//		Store:      alerting.NewClickHouseStore(conn),
//		Logger:     log,
//		Registerer: reg,
//		Version:    version,
//	})
//	...
//	alerts, err := mgr.Observe(ctx, findings) // after the findings are stored, before committing offsets
//	...
//	err = mgr.Close(shutdownCtx) // after the last Observe, before closing conn
//
// # From findings to alerts
//
// Every finding that is valid and not suppressed (Finding.Suppressed: an
// allowlist entry matched) is offered to three kinds of rule:
//
//   - Grouping rules (config "rules"): findings that share the rule's
//     group_by values (user, detector, patient, facility) and fall in the
//     same tumbling window form one alert, counted; findings below the
//     rule's min_severity never join. The default rule groups a user's
//     findings of one detector per UTC day.
//   - user_risk: each user's finding scores over a rolling window, decayed
//     by a half-life and capped per finding and per detector, are summed;
//     over the threshold the user gets a user_risk alert (critical over
//     critical_threshold).
//   - patient_surge ("dynamic VIP"): min_users distinct users with
//     findings on one patient within the window raise an alert on the
//     patient. A finding whose evidence says a care relationship explains
//     the access (explained_facts, by default care=explained) does not
//     count, so a busy ward whose staff all have encounters with the
//     patient raises nothing. Only accesses that produced a finding are
//     seen here.
//
// Time is finding time, never the wall clock: a finding's time is the
// access time its detector recorded (the event_time evidence fact) when
// that lies within the finding's window, else the window's end. Windows
// are aligned to the Unix epoch (24h windows are UTC days).
//
// # Alert ids and versions
//
// An alert's id is a hash of its rule, its group key and its window start
// (AlertID), so reprocessing the same findings yields the same ids. Its
// version holds the finding count in the high bits and last_seen (Unix
// ms) in the low bits: the alerts table is a ReplacingMergeTree on
// version, so each update supersedes the previous row, and a group rebuilt
// from fewer findings (after a restart) never overrides a fuller row.
// Observe counts each finding id once, so a retried batch changes nothing.
//
// # Notifications and suppression
//
// An alert is notified when it is raised (min_count findings), when its
// severity rises above the last notified severity, and otherwise at most
// once per repeat_interval of finding time; in between, updates are only
// stored. Outputs receive an alert only after it is stored, so the link
// in the notification resolves.
//
// # Bounded state
//
// State lives in memory and is bounded two ways. By time: a group is
// dropped once the newest finding time seen (the watermark) passes its
// window end by limits.lateness; risk and surge entries once they fall
// out of their window plus lateness. A finding whose group has already
// expired is counted (findings_total{result="too_late"}) and not grouped,
// rather than re-raising an alert that was already notified. By size:
// max_groups, max_risk_users and max_surge_patients evict the least
// recently updated entries (a tenth of the cap at once); per entry,
// max_tracked_findings, max_tracked_entities, max_finding_ids,
// max_risk_entries_per_user and max_surge_users_per_patient cap the sets
// (counts past a cap are shown as "at least N"). With the defaults the
// worst case is a few GB; typical use is far below. State is not
// persisted: after a restart groups are rebuilt from the findings
// reprocessed, with the same ids.
//
// # Delivery
//
// Each enabled output has a bounded queue and one worker. Observe only
// enqueues, never waiting on a network: when a queue is full the oldest
// queued alert is dropped (when_full: drop_oldest, the default; drop_newest
// drops the new one), counted and dead-lettered. A queued alert that is
// updated before it is sent is replaced by the newer version. The worker
// retries with exponential backoff and ±50% jitter (honoring
// Retry-After), up to max_attempts and max_elapsed; 5xx, 408, 429 and
// network errors are retried, redirects, 410 and other 4xx are not. What
// finally fails is written to alert_delivery_failures (output, alert id,
// version, attempts, error class, HTTP status, never a body) by a
// background writer. Idempotency key: alert id + version (the webhook-id).
//
// # Privacy
//
// Patient ids appear only in the alerts table and, when an output sets
// include_patient_id, in that output's payload; never in Alertmanager
// labels, metric labels, logs or errors. Logs carry alert ids, error
// classes and counts. Store errors report ClickHouse exception codes,
// never server messages (which can quote rows).
//
// # Shutdown
//
// Close stops Observe (ErrClosed), lets the workers drain their queues
// until its context is done, then cancels in-flight retries, dead-letters
// what is left (class shutdown) and flushes the dead letters. Close the
// ClickHouse connection after Close returns.
package alerting
