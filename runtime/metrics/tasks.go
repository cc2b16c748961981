package metrics

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

// Submission results (the "result" label of sluice_task_submissions_total).
const (
	SubmissionAccepted  = "accepted"  // queued; 202
	SubmissionDuplicate = "duplicate" // an idempotency-key hit; the original task id returned
	SubmissionRejected  = "rejected"  // refused; the "reason" label says why
)

// Tasks records the asynchronous task system (runtime/async): submissions
// to the invoke API, the number of tasks in each state, queue placement
// decisions and reconciler re-publishes. Methods are safe for concurrent
// use. Labels are bounded by configuration: tenant and function names come
// from the configured documents, never from requests that failed to match
// one (those are recorded with empty labels).
type Tasks struct {
	submissions *prometheus.CounterVec
	states      *prometheus.GaugeVec
	placements  *prometheus.CounterVec
	republished *prometheus.CounterVec
	takeovers   *prometheus.CounterVec
	restored    *prometheus.CounterVec
}

// Tasks returns the task system's recorder, registering its collectors on
// first use; later calls return recorders over the same collectors.
func (r *Registry) Tasks() *Tasks {
	return &Tasks{
		submissions: reuse(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_task_submissions_total",
			Help: "Invoke API submissions by result (accepted, duplicate, rejected) and rejection reason.",
		}, []string{"tenant", "function", "result", "reason"})),
		states: reuse(r.reg, prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_tasks",
			Help: "Tasks per tenant and state, as last sampled from the task store.",
		}, []string{"tenant", "state"})),
		placements: reuse(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_task_queue_placements_total",
			Help: "Queue placement changes: promotions of a function to a dedicated queue and reclamations of idle ones.",
		}, []string{"kind", "tenant", "function"})),
		republished: reuse(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_tasks_republished_total",
			Help: "Queued tasks re-published by the reconciler (a publish possibly lost in a crash; the queue deduplicates).",
		}, []string{"tenant"})),
		takeovers: reuse(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_task_takeovers_total",
			Help: "Running tasks found by a dispatcher that does not run them: taken over (their dispatcher stopped) or deferred (their attempt may still run on another instance).",
		}, []string{"tenant", "result"})),
		restored: reuse(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_tasks_restored_total",
			Help: "Task records rebuilt from their queue message (the record, written after the 202, was lost in a crash or a failed write).",
		}, []string{"tenant"})),
	}
}

// reuse adds c to reg, or returns the collector already registered under
// the same description.
func reuse[C prometheus.Collector](reg *prometheus.Registry, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		panic(err) // a programming error: conflicting metric definitions
	}
	return c
}

// Submitted counts one invoke API submission. reason is empty unless
// result is SubmissionRejected.
func (t *Tasks) Submitted(tenant, function, result, reason string) {
	t.submissions.WithLabelValues(tenant, function, result, reason).Inc()
}

// SetStates publishes a tenant's task count per state; states absent from
// counts are set to 0 so a gauge never keeps a stale value.
func (t *Tasks) SetStates(tenant string, states []string, counts map[string]int) {
	for _, s := range states {
		t.states.WithLabelValues(tenant, s).Set(float64(counts[s]))
	}
}

// Placed counts a placement decision ("promote" or "reclaim").
func (t *Tasks) Placed(kind, tenant, function string) {
	t.placements.WithLabelValues(kind, tenant, function).Inc()
}

// Republished counts tasks the reconciler published again.
func (t *Tasks) Republished(tenant string, n int) {
	t.republished.WithLabelValues(tenant).Add(float64(n))
}

// Takeover results (the "result" label of sluice_task_takeovers_total).
const (
	TakeoverTaken    = "taken"
	TakeoverDeferred = "deferred"
)

// TookOver counts a running task found by a dispatcher that does not run it;
// result is TakeoverTaken or TakeoverDeferred.
func (t *Tasks) TookOver(tenant, result string) {
	t.takeovers.WithLabelValues(tenant, result).Inc()
}

// Restored counts a task record rebuilt from its queue message.
func (t *Tasks) Restored(tenant string) { t.restored.WithLabelValues(tenant).Inc() }
