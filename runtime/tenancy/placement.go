package tenancy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"
)

// Queue names produced by Placement (dot-separated tokens, valid for
// runtime/queue):
//
//	t.<tenant>              a tenant's shared queue (the base model)
//	p.<pool>                a queue shared by small tenants (Tenant.Pool)
//	f.<tenant>.<function>   a function's dedicated queue
const (
	tenantQueuePrefix    = "t."
	poolQueuePrefix      = "p."
	dedicatedQueuePrefix = "f."
)

// Outcome is the result of one task, as Placement counts it.
type Outcome int

const (
	// Succeeded: the function returned a result (or a permanent 4xx, which
	// is the caller's fault, not a sign of a struggling function).
	Succeeded Outcome = iota
	// Failed: an error, timeout or overload response.
	Failed
)

// DecisionKind names what a Decision asks for.
type DecisionKind string

// Decision kinds.
const (
	// Promote: move the function to its dedicated queue. Create To, start
	// reading it, then queue.Move(From, To, <the function's tasks>).
	Promote DecisionKind = "promote"
	// Reclaim: the dedicated queue From went idle. queue.Move(From, To,
	// nil), stop reading From, then queue.DeleteQueue(From) (retry the Move
	// if it reports the queue not empty).
	Reclaim DecisionKind = "reclaim"
)

// Decision is one placement change. Route already reflects it when it is
// returned: new tasks go to the new queue at once, and the backlog follows
// through queue.Move.
type Decision struct {
	Kind     DecisionKind
	Tenant   string
	Function string
	From, To string
	At       time.Time
	Reason   string
}

// PlacementRecorder receives every decision, for metrics and logs. Calls
// happen inside Decisions, without Placement's lock.
type PlacementRecorder interface {
	Placed(Decision)
}

// PlacementConfig holds the thresholds. Zero fields take the defaults in
// brackets.
type PlacementConfig struct {
	// Now is the clock [time.Now]; tests inject one.
	Now func() time.Time
	// Window is the sliding window of the health statistics [1m]; it is
	// kept in Buckets time buckets [12].
	Window  time.Duration
	Buckets int
	// MinSamples: a function is judged only with at least this many
	// outcomes in the window [20].
	MinSamples int
	// SlowLatency and SlowQuantile: a function is slow when its
	// SlowQuantile latency exceeds SlowLatency [5s, 0.99] — that is, when
	// more than 1−SlowQuantile of its tasks took longer.
	SlowLatency  time.Duration
	SlowQuantile float64
	// MaxErrorRate: a function failing at least this share is unhealthy
	// [0.2].
	MaxErrorRate float64
	// MinLag: the shared queue is congested when it holds at least this
	// many tasks and is not draining over the window [10].
	MinLag int
	// PromoteAfter: harm must persist this long before promotion [30s].
	PromoteAfter time.Duration
	// ReclaimAfter: a dedicated queue with no task routed or finished and
	// nothing stored for this long is reclaimed [10m].
	ReclaimAfter time.Duration
	// Cooldown: after a reclaim the function cannot be promoted again for
	// this long [10m].
	Cooldown time.Duration
	// MaxDedicated caps the dedicated queues (0: no cap).
	MaxDedicated int
	// Recorder, if set, receives every decision.
	Recorder PlacementRecorder
}

func (c PlacementConfig) withDefaults() PlacementConfig {
	if c.Now == nil {
		c.Now = time.Now
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Window, time.Minute)
	def(&c.SlowLatency, 5*time.Second)
	def(&c.PromoteAfter, 30*time.Second)
	def(&c.ReclaimAfter, 10*time.Minute)
	def(&c.Cooldown, 10*time.Minute)
	if c.Buckets <= 0 {
		c.Buckets = 12
	}
	if c.MinSamples <= 0 {
		c.MinSamples = 20
	}
	if c.SlowQuantile <= 0 || c.SlowQuantile >= 1 {
		c.SlowQuantile = 0.99
	}
	if c.MaxErrorRate <= 0 {
		c.MaxErrorRate = 0.2
	}
	if c.MinLag <= 0 {
		c.MinLag = 10
	}
	return c
}

// Placement decides which queue each function's tasks go to (DESIGN §7,
// "Queue models"): a tenant's functions share the tenant's queue (or a pool
// shared by small tenants); a function that harms its neighbours there — its
// tasks slow or failing while the shared queue backs up — is promoted to a
// dedicated queue, and a dedicated queue that stays idle is reclaimed.
//
// Hysteresis: the harm must last PromoteAfter; reclaiming depends on
// idleness only, never on the function looking healthy again (it may look
// healthy only because it is isolated); and a reclaimed function waits
// Cooldown before it can be promoted again.
//
// The dispatcher reports outcomes (Observe) and queue depths (ObserveDepth)
// and calls Decisions periodically (every few seconds) to act on the
// changes. It is pure logic: safe for concurrent use, no goroutines, no I/O.
type Placement struct {
	cfg PlacementConfig

	mu        sync.Mutex
	pools     map[string]string // tenant → pool name, for tenants in a pool
	functions map[fnKey]*fnState
	queues    map[string]*lagState
	dedicated int
}

type fnKey struct{ tenant, function string }

type fnState struct {
	stats      window
	harmSince  time.Time // zero: not harming now
	dedicated  bool
	lastActive time.Time // last task routed or finished while dedicated
	reclaimed  time.Time // last reclaim, for Cooldown
}

// NewPlacement returns a policy for tenants (their Pool settings).
func NewPlacement(tenants []Tenant, cfg PlacementConfig) *Placement {
	p := &Placement{cfg: cfg.withDefaults(), functions: map[fnKey]*fnState{}, queues: map[string]*lagState{}}
	p.Update(tenants)
	return p
}

// Update applies a reloaded tenant list (pool membership). Dedicated queues
// are kept.
func (p *Placement) Update(tenants []Tenant) {
	pools := map[string]string{}
	for _, t := range tenants {
		if t.Pool != "" {
			pools[t.Name] = t.Pool
		}
	}
	p.mu.Lock()
	p.pools = pools
	p.mu.Unlock()
}

// SharedQueue is the queue tenant's functions share when not dedicated.
func (p *Placement) SharedQueue(tenant string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.shared(tenant)
}

func (p *Placement) shared(tenant string) string {
	if pool, ok := p.pools[tenant]; ok {
		return poolQueuePrefix + pool
	}
	return tenantQueuePrefix + tenant
}

// DedicatedQueue is the name of function's dedicated queue (whether or not
// it is promoted).
func DedicatedQueue(tenant, function string) string {
	return dedicatedQueuePrefix + tenant + "." + escapeToken(function)
}

// Route returns the queue for a new task of tenant's function. It counts as
// activity of a dedicated queue.
func (p *Placement) Route(tenant, function string) string {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	if f, ok := p.functions[fnKey{tenant, function}]; ok && f.dedicated {
		f.lastActive = now
		return DedicatedQueue(tenant, function)
	}
	return p.shared(tenant)
}

// Observe records the outcome and latency (dispatch to completion) of one
// task of tenant's function.
func (p *Placement) Observe(tenant, function string, outcome Outcome, latency time.Duration) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	k := fnKey{tenant, function}
	f, ok := p.functions[k]
	if !ok {
		f = &fnState{stats: newWindow(p.cfg.Window, p.cfg.Buckets)}
		p.functions[k] = f
	}
	f.stats.add(now, outcome == Failed, latency > p.cfg.SlowLatency)
	if f.dedicated {
		f.lastActive = now
	}
}

// ObserveDepth records the number of tasks stored in queue (any queue
// Route returned). The dispatcher samples every queue it reads.
func (p *Placement) ObserveDepth(queue string, depth int) {
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	q, ok := p.queues[queue]
	if !ok {
		q = &lagState{}
		p.queues[queue] = q
	}
	q.add(now, depth, p.cfg.Window)
}

// Adopt marks an existing dedicated queue (found by the dispatcher after a
// restart, e.g. through queue.Queues) as promoted, so that its function keeps
// routing there and it is reclaimed when idle. It reports false for names
// that are not dedicated queue names.
func (p *Placement) Adopt(queue string) bool {
	rest, ok := strings.CutPrefix(queue, dedicatedQueuePrefix)
	if !ok {
		return false
	}
	tenant, escaped, ok := strings.Cut(rest, ".")
	if !ok || !validName(tenant) {
		return false
	}
	function, ok := unescapeToken(escaped)
	if !ok {
		return false
	}
	now := p.cfg.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	k := fnKey{tenant, function}
	f, exists := p.functions[k]
	if !exists {
		f = &fnState{stats: newWindow(p.cfg.Window, p.cfg.Buckets)}
		p.functions[k] = f
	}
	if !f.dedicated {
		f.dedicated = true
		f.lastActive = now
		p.dedicated++
	}
	return true
}

// Decisions evaluates the policy now, applies the changes to Route, and
// returns them (promotions first, each kind ordered by tenant and function)
// for the caller to carry out.
func (p *Placement) Decisions() []Decision {
	now := p.cfg.Now()
	p.mu.Lock()
	var out []Decision
	// Functions active per shared queue: promotion only helps when there
	// are neighbours to protect.
	active := map[string]int{}
	for k, f := range p.functions {
		if !f.dedicated && f.stats.sum(now).total > 0 {
			active[p.shared(k.tenant)]++
		}
	}
	keys := make([]fnKey, 0, len(p.functions))
	for k := range p.functions {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].tenant != keys[j].tenant {
			return keys[i].tenant < keys[j].tenant
		}
		return keys[i].function < keys[j].function
	})
	var reclaims []Decision
	keepLag := map[string]bool{} // dedicated queues keep their last depth
	for _, k := range keys {
		f := p.functions[k]
		shared, dedicated := p.shared(k.tenant), DedicatedQueue(k.tenant, k.function)
		if f.dedicated {
			// A queue never sampled counts as empty: the dispatcher samples
			// every queue it reads, and DeleteQueue refuses a non-empty one.
			q := p.queues[dedicated]
			if now.Sub(f.lastActive) >= p.cfg.ReclaimAfter && (q == nil || q.latest() == 0) {
				f.dedicated, f.reclaimed, f.harmSince = false, now, time.Time{}
				f.stats = newWindow(p.cfg.Window, p.cfg.Buckets) // start afresh in the shared queue
				p.dedicated--
				delete(p.queues, dedicated)
				reclaims = append(reclaims, Decision{Kind: Reclaim, Tenant: k.tenant, Function: k.function,
					From: dedicated, To: shared, At: now,
					Reason: fmt.Sprintf("idle for %s", now.Sub(f.lastActive).Round(time.Second))})
				continue
			}
			keepLag[dedicated] = true
			continue
		}
		reason, harm := p.harm(now, f, shared, active[shared])
		if !harm {
			f.harmSince = time.Time{}
			if f.stats.sum(now).total == 0 && (f.reclaimed.IsZero() || now.Sub(f.reclaimed) >= p.cfg.Cooldown) {
				delete(p.functions, k) // forget functions that went quiet
			}
			continue
		}
		if f.harmSince.IsZero() {
			f.harmSince = now
		}
		switch {
		case now.Sub(f.harmSince) < p.cfg.PromoteAfter:
			continue
		case !f.reclaimed.IsZero() && now.Sub(f.reclaimed) < p.cfg.Cooldown:
			continue // the harm keeps being tracked; promotion waits
		case p.cfg.MaxDedicated > 0 && p.dedicated >= p.cfg.MaxDedicated:
			continue
		}
		f.dedicated, f.lastActive, f.harmSince = true, now, time.Time{}
		p.dedicated++
		out = append(out, Decision{Kind: Promote, Tenant: k.tenant, Function: k.function,
			From: shared, To: dedicated, At: now, Reason: reason})
	}
	for q, l := range p.queues {
		if !keepLag[q] && l.stale(now, p.cfg.Window) {
			delete(p.queues, q)
		}
	}
	out = append(out, reclaims...)
	p.mu.Unlock()
	if p.cfg.Recorder != nil {
		for _, d := range out {
			p.cfg.Recorder.Placed(d)
		}
	}
	return out
}

// harm reports whether a function in a shared queue hurts its neighbours
// now: it is unhealthy (slow or failing), the queue is congested, and other
// functions share the queue.
func (p *Placement) harm(now time.Time, f *fnState, shared string, activeInQueue int) (string, bool) {
	s := f.stats.sum(now)
	if s.total < p.cfg.MinSamples || activeInQueue < 2 {
		return "", false
	}
	var why []string
	if float64(s.slow) > float64(s.total)*(1-p.cfg.SlowQuantile) {
		why = append(why, fmt.Sprintf("p%g latency above %s (%d of %d slow)", p.cfg.SlowQuantile*100, p.cfg.SlowLatency, s.slow, s.total))
	}
	if float64(s.failed) >= float64(s.total)*p.cfg.MaxErrorRate {
		why = append(why, fmt.Sprintf("error rate %.0f%% (%d of %d)", 100*float64(s.failed)/float64(s.total), s.failed, s.total))
	}
	if len(why) == 0 {
		return "", false
	}
	q := p.queues[shared]
	if q == nil || !q.congested(p.cfg.MinLag) {
		return "", false
	}
	why = append(why, fmt.Sprintf("queue %s backlog %d not draining", shared, q.latest()))
	return strings.Join(why, "; "), true
}

// window counts outcomes in time buckets covering the sliding window.
type window struct {
	width   time.Duration
	buckets []bucket
}

type bucket struct {
	epoch               int64 // bucket number since the Unix epoch; which slot is current
	total, failed, slow int
}

func newWindow(d time.Duration, n int) window {
	return window{width: max(d/time.Duration(n), time.Millisecond), buckets: make([]bucket, n)}
}

func (w *window) epoch(t time.Time) int64 { return t.UnixNano() / int64(w.width) }

func (w *window) add(now time.Time, failed, slow bool) {
	e := w.epoch(now)
	b := &w.buckets[int(e%int64(len(w.buckets)))]
	if b.epoch != e {
		*b = bucket{epoch: e}
	}
	b.total++
	if failed {
		b.failed++
	}
	if slow {
		b.slow++
	}
}

// sum adds up the buckets inside the window ending now.
func (w *window) sum(now time.Time) bucket {
	e := w.epoch(now)
	var s bucket
	for _, b := range w.buckets {
		if b.epoch > e-int64(len(w.buckets)) && b.epoch <= e {
			s.total += b.total
			s.failed += b.failed
			s.slow += b.slow
		}
	}
	return s
}

// lagState keeps a queue's depth samples over the window.
type lagState struct {
	samples []depthSample // oldest first
}

type depthSample struct {
	at    time.Time
	depth int
}

func (l *lagState) add(now time.Time, depth int, window time.Duration) {
	l.samples = append(l.samples, depthSample{now, depth})
	// Keep one sample older than the window as the baseline of the trend.
	i := 0
	for i+1 < len(l.samples) && now.Sub(l.samples[i+1].at) >= window {
		i++
	}
	if i > 0 {
		l.samples = append(l.samples[:0], l.samples[i:]...)
	}
}

func (l *lagState) latest() int {
	if len(l.samples) == 0 {
		return 0
	}
	return l.samples[len(l.samples)-1].depth
}

// congested: at least minLag tasks stored and no less than at the start of
// the window (the backlog is not draining).
func (l *lagState) congested(minLag int) bool {
	if len(l.samples) == 0 {
		return false
	}
	last := l.latest()
	return last >= minLag && last >= l.samples[0].depth
}

func (l *lagState) stale(now time.Time, window time.Duration) bool {
	return len(l.samples) == 0 || now.Sub(l.samples[len(l.samples)-1].at) > 2*window
}

// maxFunctionToken keeps dedicated queue names within runtime/queue's
// 200-byte limit ("f." + 63-byte tenant + "." + token).
const maxFunctionToken = 120

// escapeToken makes a function name a queue-name token: letters, digits
// and '-' stay, every other byte becomes "_xx" (hex). Over-long results are
// replaced by "_h" and a hash, which unescapeToken does not reverse.
func escapeToken(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "_%02x", c)
	}
	if b.Len() > maxFunctionToken || b.Len() == 0 {
		sum := sha256.Sum256([]byte(s))
		return "_h" + hex.EncodeToString(sum[:16])
	}
	return b.String()
}

func unescapeToken(s string) (string, bool) {
	if strings.HasPrefix(s, "_h") || s == "" {
		return "", false
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '_' {
			b.WriteByte(c)
			continue
		}
		if i+2 >= len(s) {
			return "", false
		}
		v, err := hex.DecodeString(s[i+1 : i+3])
		if err != nil {
			return "", false
		}
		b.WriteByte(v[0])
		i += 2
	}
	return b.String(), true
}
