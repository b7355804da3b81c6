// Package alerting turns findings into alerts, stores them in ClickHouse
// and notifies analysts through Alertmanager, a Standard Webhooks
// endpoint, Slack and syslog/CEF.
//
// # Use
//
//	mgr, err := alerting.New(cfg.Alerting, alerting.Options{
//		Store:      alerting.NewClickHouseStore(conn), // also the StateStore and LifecycleStore
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
//     critical_threshold). The sum is taken at the time of each of the
//     user's findings, over the findings up to it, and a finding that
//     arrives after later ones re-evaluates those within the window
//     after it, so the alerts depend on the set of findings, not on the
//     order they arrive in (the peer stage's volume and break_glass
//     findings arrive after the user's later findings).
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
// # Persisted state: nothing is too late
//
// With a StateStore (ClickHouseStore, in ehrwatch run), the engine keeps
// no state between calls. Each Observe names the state its findings
// touch (their rule groups, their users' risk entries, their patients'
// surge references, the risk and surge groups of their windows), loads
// exactly those rows from alert_engine_state, applies the findings,
// writes the changed rows back (version + 1) together with the alert
// rows and the finding memberships (alert_findings), and only then hands
// notifications to the outputs and returns, before the pipeline commits
// the batch's offsets. Consequences:
//
//   - No watermark decides anything: a finding joins its group however
//     late it arrives, so a backlog, one partition far behind another, or
//     a partition moved to another instance cannot drop it (the old global
//     watermark dropped 16 of 117 alertable findings of a 503 000-event
//     backlog as too_late). The state is keyed by alert id, user and
//     patient, never by partition: per key, findings arrive in the
//     partition's order, whichever instance owns it, so the alert set does
//     not depend on partition count, batching, timing or restarts.
//   - Restarts and rebalances neither repeat nor lose notifications: the
//     notified flag, severity and time of each group are in its row, so a
//     re-read batch finds its findings already counted and changes
//     nothing; a new owner of a partition continues the groups where the
//     old one left them.
//   - A failed write leaves nothing behind (the working set is dropped)
//     and the pipeline retries the batch; the alert ids, versions and
//     notification decisions come out the same.
//
// Costs: one or two primary-key lookups per batch that holds findings,
// and one row per touched key written back. Concurrent instances writing
// the same key at once (patient_surge groups span users, hence
// partitions) resolve by version: last writer wins, which can undercount
// a surge seen by two instances in the same second. Rows expire 90 days
// after their last update (TTL): a finding more than 90 days late starts
// its group afresh.
//
// # Bounded state
//
// Without a StateStore (the demo, dry runs), state lives in memory and
// is bounded two ways. By time: a group is
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
// worst case is a few GB; typical use is far below. This state is lost
// on a restart. With a StateStore the per-entry caps still apply to each
// persisted row; the global caps and the watermark only bound one
// Observe's working set.
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
// background writer.
//
// Idempotency keys: the Standard Webhooks webhook-id is alert id + "_v" +
// version for a notification and alert id + "_resolved_s" + the triage
// state version before the closing for a closing (WebhookID,
// WebhookResolvedID); Alertmanager identifies an alert by its labels,
// which include alert_id, so a resend updates the same alert. A resend
// after a crash therefore carries the same key.
//
// # Lifecycle
//
// An alert is notified (it fires) when it is raised, escalated or
// repeated, as above; alerts.notified_version records the version. From
// then on the lifecycle loop (alerting.lifecycle, every interval, default
// 1m; only with ClickHouse) keeps it in step with triage:
//
//   - while it is open in triage (new or triaged), it is re-sent to
//     Alertmanager with endsAt = now + 3 × interval, so it keeps firing
//     however long it waits, and Alertmanager's resolve_timeout never
//     applies; every notification carries the same endsAt rule;
//   - once it is closed in triage, Alertmanager gets it with endsAt = the
//     closing time (resolved) and the webhook gets a signed alert.resolved
//     delivery; each is recorded in alert_lifecycle, so a closing is
//     delivered once per output (retried at every tick until it succeeds)
//     and a reopened alert fires again and is resolved again when closed;
//   - notifications the other outputs never got (the process crashed
//     or shut down with them queued or in flight) are sent again: every
//     delivered notification is recorded in alert_lifecycle (kind
//     notified, within a second), and the loop re-queues the alerts
//     notified between 24h and 3 × interval ago (or before the process
//     started) whose notified version an output has neither delivered
//     nor dead-lettered for good, under the original webhook-id;
//   - the loop also counts the findings stored between
//     invariant_lookback and invariant_grace ago that a rule with
//     min_count ≤ 1 takes and that no alert counts
//     (ehrwatch_alerting_findings_without_alert; it must be 0).
//
// The loop reads everything from ClickHouse (alerts, alert_state_history,
// alert_lifecycle), so it survives restarts and several instances can run
// it (each re-sends the same alerts; Alertmanager merges them). Slack and
// syslog get notifications only, no lifecycle.
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
