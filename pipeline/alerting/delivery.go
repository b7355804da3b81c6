package alerting

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/backoff"
)

// Error classes of failed deliveries: the error_class column and the
// class metric label. They say what went wrong without quoting a server.
const (
	ClassTimeout   = "timeout"
	ClassRefused   = "connection_refused"
	ClassReset     = "connection_reset"
	ClassDNS       = "dns"
	ClassTLS       = "tls"
	ClassNetwork   = "network"
	ClassHTTP3xx   = "http_3xx"
	ClassHTTP4xx   = "http_4xx"
	ClassHTTP408   = "http_408"
	ClassHTTP410   = "http_410"
	ClassHTTP429   = "http_429"
	ClassHTTP5xx   = "http_5xx"
	ClassEncode    = "encode"
	ClassQueueFull = "queue_full"
	ClassShutdown  = "shutdown"
)

// DeliveryError is a failed delivery attempt. Its text is the class and
// status only: no URL (Slack's carries a token), no body.
type DeliveryError struct {
	Class      string
	Status     int
	Retryable  bool
	RetryAfter time.Duration
	cause      error
}

func (e *DeliveryError) Error() string {
	if e.Status != 0 {
		return "delivery failed: " + e.Class + " (HTTP " + strconv.Itoa(e.Status) + ")"
	}
	return "delivery failed: " + e.Class
}

// Unwrap gives programmatic access to the cause; its text is never shown.
func (e *DeliveryError) Unwrap() error { return e.cause }

// errClass classifies a transport error.
func errClass(err error) string {
	var ne net.Error
	var dnsErr *net.DNSError
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	var alertErr tls.AlertError
	var unkAuth x509.UnknownAuthorityError
	var hostErr x509.HostnameError
	var invErr x509.CertificateInvalidError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, syscall.ETIMEDOUT):
		return ClassTimeout
	case errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &alertErr),
		errors.As(err, &unkAuth), errors.As(err, &hostErr), errors.As(err, &invErr):
		return ClassTLS
	case errors.As(err, &dnsErr):
		return ClassDNS
	case errors.Is(err, syscall.ECONNREFUSED):
		return ClassRefused
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return ClassReset
	case errors.As(err, &ne) && ne.Timeout():
		return ClassTimeout
	}
	return ClassNetwork
}

// transportError wraps a transport failure. A canceled context means the
// output is shutting down.
func transportError(ctx context.Context, err error) *DeliveryError {
	if errors.Is(ctx.Err(), context.Canceled) {
		return &DeliveryError{Class: ClassShutdown, cause: err}
	}
	return &DeliveryError{Class: errClass(err), Retryable: true, cause: err}
}

// statusError classifies a non-2xx HTTP status (Standard Webhooks'
// etiquette): 5xx, 408 and 429 are retried, honoring Retry-After; 410
// means the endpoint is gone; redirects are not followed; other 4xx are
// permanent.
func statusError(status int, retryAfter string, now time.Time) *DeliveryError {
	e := &DeliveryError{Status: status}
	switch {
	case status >= 300 && status < 400:
		e.Class = ClassHTTP3xx
	case status == 408:
		e.Class, e.Retryable = ClassHTTP408, true
	case status == 410:
		e.Class = ClassHTTP410
	case status == 429:
		e.Class, e.Retryable = ClassHTTP429, true
	case status >= 400 && status < 500:
		e.Class = ClassHTTP4xx
	default:
		e.Class, e.Retryable = ClassHTTP5xx, true
	}
	if e.Retryable && retryAfter != "" {
		if s, err := strconv.Atoi(retryAfter); err == nil && s >= 0 {
			e.RetryAfter = time.Duration(s) * time.Second
		} else if t, err := time.Parse(time.RFC1123, retryAfter); err == nil && t.After(now) {
			e.RetryAfter = t.Sub(now)
		}
	}
	return e
}

// notifier sends one alert to one destination.
type notifier interface {
	send(ctx context.Context, a *Alert) error
	close() error
}

// delivery is one queued alert for one output.
type delivery struct {
	alert    Alert
	enqueued time.Time
}

// queue is a bounded FIFO that never blocks the producer. A queued alert
// superseded by a newer version of the same alert is replaced in place, so
// a busy alert occupies one slot.
type queue struct {
	mu     sync.Mutex
	items  []*delivery
	head   int
	index  map[string]*delivery
	size   int
	policy string
	closed bool
	ready  chan struct{}
}

func newQueue(size int, policy string) *queue {
	return &queue{index: map[string]*delivery{}, size: size, policy: policy, ready: make(chan struct{}, 1)}
}

func (q *queue) lenLocked() int { return len(q.items) - q.head }

// push enqueues d. It returns the delivery dropped to make room (or d
// itself under drop_newest, or when the queue is closed) and why.
func (q *queue) push(d *delivery) (dropped *delivery, class string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return d, ClassShutdown
	}
	if old := q.index[d.alert.AlertID]; old != nil {
		if d.alert.Version >= old.alert.Version {
			change := old.alert.Change
			old.alert = d.alert
			if change.rank() > old.alert.Change.rank() {
				old.alert.Change = change
			}
		}
		return nil, ""
	}
	if q.lenLocked() >= q.size {
		if q.policy == DropNewest {
			return d, ClassQueueFull
		}
		dropped, class = q.popLocked(), ClassQueueFull
	}
	q.items = append(q.items, d)
	q.index[d.alert.AlertID] = d
	select {
	case q.ready <- struct{}{}:
	default:
	}
	return dropped, class
}

func (q *queue) popLocked() *delivery {
	d := q.items[q.head]
	q.items[q.head] = nil
	q.head++
	if q.head > 64 && q.head*2 > len(q.items) {
		q.items = append([]*delivery(nil), q.items[q.head:]...)
		q.head = 0
	}
	delete(q.index, d.alert.AlertID)
	return d
}

// pop blocks until an item is available, the queue is closed and empty,
// or abort is closed.
func (q *queue) pop(abort <-chan struct{}) (*delivery, bool) {
	for {
		q.mu.Lock()
		if q.lenLocked() > 0 {
			d := q.popLocked()
			q.mu.Unlock()
			return d, true
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, false
		}
		select {
		case <-q.ready:
		case <-abort:
			return nil, false
		}
	}
}

func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *queue) drain() []*delivery {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []*delivery
	for q.lenLocked() > 0 {
		out = append(out, q.popLocked())
	}
	return out
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.lenLocked()
}

// output is one notification channel: a queue and its worker.
type output struct {
	name  string
	cfg   outputCommon
	n     notifier
	q     *queue
	m     *metrics
	dl    *deadLetters
	log   zerolog.Logger
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) bool
	// onSent, when set, learns of every delivered notification (the
	// lifecycle loop records it, see Manager.recordSent).
	onSent func(output string, a Alert)
	base   context.Context // canceled when Close's deadline passes
	cancel context.CancelFunc
	done   chan struct{}
}

func newOutput(name string, cfg outputCommon, n notifier, m *metrics, dl *deadLetters, log zerolog.Logger, now func() time.Time) *output {
	base, cancel := context.WithCancel(context.Background())
	o := &output{
		name: name, cfg: cfg, n: n, q: newQueue(cfg.Delivery.QueueSize, cfg.Delivery.WhenFull),
		m: m, dl: dl, log: log.With().Str("output", name).Logger(), now: now, sleep: sleepCtx,
		base: base, cancel: cancel, done: make(chan struct{}),
	}
	// Create the output's series at zero, so dashboards see them at once.
	m.queued.WithLabelValues(name).Set(0)
	m.sent.WithLabelValues(name)
	return o
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// enqueue hands a to the worker without blocking.
func (o *output) enqueue(a Alert) {
	if o.cfg.MinSeverity != "" && a.Severity.Rank() < o.cfg.MinSeverity.Rank() {
		return
	}
	dropped, class := o.q.push(&delivery{alert: a, enqueued: o.now()})
	o.m.queued.WithLabelValues(o.name).Set(float64(o.q.len()))
	if dropped != nil {
		o.m.dropped.WithLabelValues(o.name, class).Inc()
		o.log.Warn().Str("alert_id", dropped.alert.AlertID).Uint64("version", dropped.alert.Version).
			Str("class", class).Msg("alert notification dropped; dead-lettered")
		o.deadLetter(dropped, 0, time.Time{}, &DeliveryError{Class: class})
	}
}

func (o *output) start() { go o.run() }

func (o *output) run() {
	defer close(o.done)
	for {
		d, ok := o.q.pop(o.base.Done())
		if !ok {
			break
		}
		o.m.queued.WithLabelValues(o.name).Set(float64(o.q.len()))
		o.deliver(d)
	}
	for _, d := range o.q.drain() {
		o.m.dropped.WithLabelValues(o.name, ClassShutdown).Inc()
		o.deadLetter(d, 0, time.Time{}, &DeliveryError{Class: ClassShutdown})
	}
	o.m.queued.WithLabelValues(o.name).Set(0)
}

// deliver tries d until it is sent, fails permanently, or runs out of
// attempts or time; then it is dead-lettered.
func (o *output) deliver(d *delivery) {
	c := o.cfg.Delivery
	first := o.now()
	for attempt := 1; ; attempt++ {
		ctx, cancel := context.WithTimeout(o.base, c.Timeout)
		err := o.n.send(ctx, &d.alert)
		cancel()
		if err == nil {
			o.m.latency.WithLabelValues(o.name).Observe(o.now().Sub(d.enqueued).Seconds())
			o.m.sent.WithLabelValues(o.name).Inc()
			if o.onSent != nil {
				o.onSent(o.name, d.alert)
			}
			return
		}
		var de *DeliveryError
		if !errors.As(err, &de) {
			de = &DeliveryError{Class: ClassNetwork, Retryable: true, cause: err}
		}
		if o.base.Err() != nil {
			de = &DeliveryError{Class: ClassShutdown, Status: de.Status, cause: err}
		}
		o.m.attemptErrors.WithLabelValues(o.name, de.Class).Inc()
		if !de.Retryable || attempt >= c.MaxAttempts {
			o.fail(d, attempt, first, de)
			return
		}
		wait := retryPause(c, attempt)
		if de.RetryAfter > wait {
			wait = min(de.RetryAfter, c.MaxBackoff)
		}
		if o.now().Add(wait).Sub(first) > c.MaxElapsed {
			o.fail(d, attempt, first, de)
			return
		}
		o.log.Debug().Str("alert_id", d.alert.AlertID).Int("attempt", attempt).Str("class", de.Class).
			Int("status", de.Status).Dur("retry_in", wait).Msg("alert delivery failed; will retry")
		if !o.sleep(o.base, wait) {
			o.fail(d, attempt, first, &DeliveryError{Class: ClassShutdown, Status: de.Status})
			return
		}
	}
}

func (o *output) fail(d *delivery, attempts int, first time.Time, de *DeliveryError) {
	o.m.failed.WithLabelValues(o.name, de.Class).Inc()
	o.log.Warn().Str("alert_id", d.alert.AlertID).Uint64("version", d.alert.Version).Int("attempts", attempts).
		Str("class", de.Class).Int("status", de.Status).Msg("alert delivery failed; dead-lettered")
	o.deadLetter(d, attempts, first, de)
}

func (o *output) deadLetter(d *delivery, attempts int, first time.Time, de *DeliveryError) {
	o.dl.add(DeliveryFailure{
		Output:         o.name,
		AlertID:        d.alert.AlertID,
		Version:        d.alert.Version,
		Attempts:       uint32(attempts),
		ErrorClass:     de.Class,
		HTTPStatus:     uint16(max(0, min(de.Status, 65535))),
		FirstAttemptAt: first,
		FailedAt:       o.now().UTC(),
	})
}

// retryPause is the wait after the attempt-th failure (attempt from 1):
// initial·2^(attempt-1) capped at max, then jittered uniformly within ±50%.
func retryPause(c DeliveryConfig, attempt int) time.Duration {
	return backoff.Policy{Initial: c.InitialBackoff, Max: c.MaxBackoff, Multiplier: 2, Jitter: 0.5}.Delay(attempt - 1)
}

// deadLetters buffers delivery failures and writes them in batches from
// its own goroutine, so neither Observe nor a worker waits on ClickHouse.
// The buffer is bounded; overflow drops the oldest rows (counted).
type deadLetters struct {
	mu     sync.Mutex
	buf    []DeliveryFailure
	max    int
	store  Store
	m      *metrics
	log    zerolog.Logger
	kick   chan struct{}
	stop   chan struct{}
	done   chan struct{}
	period time.Duration
}

const (
	deadLetterBuffer     = 10_000
	deadLetterBatch      = 500
	deadLetterWriteLimit = 10 * time.Second
)

// deadLetterPeriod is how often buffered dead letters are written (a
// variable so tests can shorten it).
var deadLetterPeriod = time.Second

func newDeadLetters(store Store, m *metrics, log zerolog.Logger) *deadLetters {
	return &deadLetters{
		max: deadLetterBuffer, store: store, m: m, log: log, period: deadLetterPeriod,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
	}
}

func (dl *deadLetters) add(f DeliveryFailure) {
	dl.m.deadLetters.Inc()
	if dl.store == nil {
		return
	}
	dl.mu.Lock()
	dl.buf = append(dl.buf, f)
	if over := len(dl.buf) - dl.max; over > 0 {
		dl.buf = dl.buf[over:]
		dl.m.deadLettersLost.Add(float64(over))
	}
	n := len(dl.buf)
	dl.mu.Unlock()
	if n >= deadLetterBatch {
		select {
		case dl.kick <- struct{}{}:
		default:
		}
	}
}

func (dl *deadLetters) start() { go dl.run() }

func (dl *deadLetters) run() {
	defer close(dl.done)
	t := time.NewTicker(dl.period)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-dl.kick:
		case <-dl.stop:
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), deadLetterWriteLimit)
		dl.flush(ctx)
		cancel()
	}
}

// flush writes the buffered rows; on failure they go back to the buffer.
func (dl *deadLetters) flush(ctx context.Context) bool {
	if dl.store == nil {
		return true
	}
	dl.mu.Lock()
	rows := dl.buf
	dl.buf = nil
	dl.mu.Unlock()
	if len(rows) == 0 {
		return true
	}
	if err := dl.store.WriteDeliveryFailures(ctx, rows); err != nil {
		dl.m.deadLetterWriteErrors.Inc()
		dl.log.Error().Str("error", err.Error()).Int("rows", len(rows)).Msg("write alert delivery dead letters")
		dl.mu.Lock()
		dl.buf = append(rows, dl.buf...)
		if over := len(dl.buf) - dl.max; over > 0 {
			dl.buf = dl.buf[over:]
			dl.m.deadLettersLost.Add(float64(over))
		}
		dl.mu.Unlock()
		return false
	}
	return true
}

// shutdown stops the loop and makes a last flush within ctx.
func (dl *deadLetters) shutdown(ctx context.Context) error {
	close(dl.stop)
	<-dl.done
	if !dl.flush(ctx) {
		dl.mu.Lock()
		n := len(dl.buf)
		dl.buf = nil
		dl.mu.Unlock()
		dl.m.deadLettersLost.Add(float64(n))
		return errors.New("alerting: " + strconv.Itoa(n) + " delivery dead letters could not be written at shutdown")
	}
	return nil
}
