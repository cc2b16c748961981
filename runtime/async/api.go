package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/metrics"
	"github.com/sluicehq/sluice/runtime/queue"
	"github.com/sluicehq/sluice/runtime/tasks"
	"github.com/sluicehq/sluice/runtime/tenancy"
)

// Error codes of the API's JSON error bodies ({"error": ..., "code": ...}).
const (
	CodeUnauthenticated = "unauthenticated"  // 401: missing or unknown API key
	CodeNotFound        = "not_found"        // 404: no such function or task for this tenant
	CodeTooLarge        = "too_large"        // 413: body above the function's maxRequestBytes
	CodeInvalidEvent    = "invalid_event"    // 400: a malformed CloudEvent, or a batch
	CodeInvalidRequest  = "invalid_request"  // 400: bad parameters or JSON
	CodeQuotaExceeded   = "quota_exceeded"   // 429: rate or queue-depth quota; see Retry-After
	CodeConflict        = "conflict"         // 409: the task's state does not allow the operation
	CodeUnavailable     = "unavailable"      // 503: the queue or the task store failed; retry
	CodeMethod          = "method_not_found" // 404: unknown operation
)

// apiTimeout bounds the store and queue work of one request. That work
// runs detached from the request's context: once a task is stored, a
// client hanging up must not stop it from being queued.
const apiTimeout = 30 * time.Second

// Handler serves the invoke and task APIs (every route needs a tenant's
// API key: Authorization: Bearer <key>):
//
//	POST   /v1/functions/{name}/invocations  queue an invocation → 202 {"taskId"}
//	POST   /v1/functions/{name}:pause        pause a function
//	POST   /v1/functions/{name}:resume       resume it
//	GET    /v1/tasks/{id}                    one task
//	GET    /v1/tasks?function=&state=&after=&before=&limit=&cursor=
//	POST   /v1/tasks/{id}:cancel             cancel (also while running)
//	POST   /v1/tasks/{id}:retry              re-run a failed, dead-lettered, cancelled or expired task
//	DELETE /v1/tasks/{id}                    delete a done task
//	POST   /v1/tasks:batch                   {"op": "cancel|retry|delete", "filter": {...}}
//
// docs/async.md is the reference.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/functions/{name}/invocations", s.authed(s.handleInvoke))
	mux.HandleFunc("POST /v1/functions/{action}", s.authed(s.handleFunctionAction))
	mux.HandleFunc("GET /v1/tasks", s.authed(s.handleList))
	mux.HandleFunc("POST /v1/tasks:batch", s.authed(s.handleBatch))
	mux.HandleFunc("GET /v1/tasks/{id}", s.authed(s.handleGet))
	mux.HandleFunc("DELETE /v1/tasks/{id}", s.authed(s.handleDelete))
	mux.HandleFunc("POST /v1/tasks/{action}", s.authed(s.handleTaskAction))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, CodeMethod, fmt.Sprintf("no operation %s %s", r.Method, r.URL.Path))
	})
	return mux
}

// apiError is a JSON error body.
type apiError struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, apiError{Error: msg, Code: code})
}

type tenantHandler func(w http.ResponseWriter, r *http.Request, tenant string)

// authed authenticates the request's bearer key; 401 without saying
// whether the key was missing or unknown.
func (s *Service) authed(h tenantHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		key, ok := bearer(r.Header.Get("Authorization"))
		tenant, err := s.auth.Authenticate(key)
		if !ok || err != nil {
			if strings.HasSuffix(r.URL.Path, "/invocations") {
				s.rec.Submitted("", "", metrics.SubmissionRejected, CodeUnauthenticated)
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			writeError(w, http.StatusUnauthorized, CodeUnauthenticated, "missing or unknown API key")
			return
		}
		h(w, r, tenant)
	}
}

func bearer(h string) (string, bool) {
	scheme, key, ok := strings.Cut(strings.TrimSpace(h), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	key = strings.TrimSpace(key)
	return key, key != ""
}

// InvokeResponse is the body of a successful submission: 202 for a new
// task, 200 with Duplicate for an idempotency-key hit (TaskID is then the
// original task's id).
type InvokeResponse struct {
	TaskID    string `json:"taskId"`
	Duplicate bool   `json:"duplicate,omitempty"`
}

func (s *Service) handleInvoke(w http.ResponseWriter, r *http.Request, tenant string) {
	received := s.now()
	name := r.PathValue("name")
	fn := s.fns[fnKey{tenant, name}]
	reject := func(status int, code, msg string) {
		fnLabel := ""
		if fn != nil {
			fnLabel = name
		}
		s.rec.Submitted(tenant, fnLabel, metrics.SubmissionRejected, code)
		writeError(w, status, code, msg)
	}
	if fn == nil {
		reject(http.StatusNotFound, CodeNotFound, fmt.Sprintf("no function %q", name))
		return
	}
	if r.ContentLength > fn.maxBytes {
		reject(http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("body of %d bytes exceeds the function's limit of %d", r.ContentLength, fn.maxBytes))
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, fn.maxBytes))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		reject(http.StatusRequestEntityTooLarge, CodeTooLarge, fmt.Sprintf("body exceeds the function's limit of %d bytes", fn.maxBytes))
		return
	case err != nil:
		reject(http.StatusBadRequest, CodeInvalidRequest, "reading the body: "+err.Error())
		return
	}
	id, err := tasks.NewID()
	if err != nil {
		reject(http.StatusServiceUnavailable, CodeUnavailable, err.Error())
		return
	}
	pe, err := parseInvocation(r.Context(), r, body, name, id, received)
	if err != nil {
		reject(http.StatusBadRequest, CodeInvalidEvent, err.Error())
		return
	}
	stored, err := json.Marshal(pe.event)
	if err != nil {
		reject(http.StatusBadRequest, CodeInvalidEvent, fmt.Sprintf("%v: %v", errBadEvent, err))
		return
	}
	// Idempotency keys are scoped to the function: the same CloudEvent sent
	// to two functions is two invocations. (The separator is the ASCII unit
	// separator: PostgreSQL text cannot hold NUL.)
	var ikey string
	if k := r.Header.Get("Idempotency-Key"); k != "" {
		ikey = name + "\x1fkey\x1f" + k
	} else if pe.cloudEvent {
		ikey = name + "\x1fce\x1f" + pe.event.Source() + "\x1f" + pe.event.ID()
	}

	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), apiTimeout)
	defer cancel()
	depth, err := s.depth.get(ctx, tenant)
	if err != nil {
		reject(http.StatusServiceUnavailable, CodeUnavailable, "task store: "+err.Error())
		return
	}
	if err := s.gate.limits.Admit(tenant, depth); err != nil {
		var qe *tenancy.QuotaError
		if errors.As(err, &qe) {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(qe.RetryAfter.Seconds()))))
			s.rec.Submitted(tenant, name, metrics.SubmissionRejected, string(qe.Reason))
			writeError(w, http.StatusTooManyRequests, CodeQuotaExceeded, qe.Error())
			return
		}
		reject(http.StatusServiceUnavailable, CodeUnavailable, err.Error())
		return
	}
	t := &tasks.Task{
		ID: id, Tenant: tenant, Function: name, IdempotencyKey: ikey, DedupWindow: fn.dedup, Event: stored,
		Labels: map[string]string{LabelInstance: s.cfg.Instance},
		Times:  tasks.Timestamps{Received: received},
	}
	if fn.paused.Load() {
		t.State = tasks.Paused
	}
	// With a deferred-create store (bbolt) the record is written after
	// the answer: the message, stored before the 202, carries what
	// rebuilds it (ExtTask, restore), and until it is written the store
	// serves the task from its pending writes. Otherwise (PostgreSQL,
	// shared by instances) the record is committed before the publish.
	if dc, ok := s.store.(tasks.DeferredCreator); ok {
		err = dc.CreateDeferred(ctx, t)
	} else {
		err = s.store.Create(ctx, t)
	}
	var de *tasks.DuplicateError
	switch {
	case errors.As(err, &de):
		s.rec.Submitted(tenant, name, metrics.SubmissionDuplicate, "")
		w.Header().Set("Location", "/v1/tasks/"+de.Original)
		writeJSON(w, http.StatusOK, InvokeResponse{TaskID: de.Original, Duplicate: true})
		return
	case errors.Is(err, tasks.ErrInvalid):
		reject(http.StatusBadRequest, CodeInvalidRequest, err.Error())
		return
	case err != nil:
		reject(http.StatusServiceUnavailable, CodeUnavailable, "task store: "+err.Error())
		return
	}
	s.settlePaused(ctx, fn, t)
	if _, err := s.publishTask(ctx, t, &pe.event); err != nil {
		s.unpublished(ctx, t, err)
		if errors.Is(err, queue.ErrTooLarge) {
			reject(http.StatusRequestEntityTooLarge, CodeTooLarge, "the invocation is too large for the task queue")
			return
		}
		w.Header().Set("Retry-After", "1")
		reject(http.StatusServiceUnavailable, CodeUnavailable, "task queue: "+err.Error())
		return
	}
	s.depth.added(tenant)
	s.rec.Submitted(tenant, name, metrics.SubmissionAccepted, "")
	w.Header().Set("Location", "/v1/tasks/"+id)
	writeJSON(w, http.StatusAccepted, InvokeResponse{TaskID: id})
}

// unpublished undoes a task whose publish failed: it is cancelled with the
// reason and deleted, which releases its idempotency key so that the
// client's retry queues afresh. If that fails too, the task stays queued
// and the reconciler publishes it later (the client then finds it by its
// idempotency key).
func (s *Service) unpublished(ctx context.Context, t *tasks.Task, cause error) {
	_, err := s.store.Transition(ctx, t.Tenant, t.ID, tasks.Cancelled, func(t *tasks.Task) error {
		t.Error = "not queued: " + cause.Error()
		return nil
	})
	if err == nil {
		err = s.store.Delete(ctx, t.Tenant, t.ID)
	}
	if err != nil {
		s.log.Warn("a task whose publish failed could not be withdrawn; the reconciler will queue it",
			"tenant", t.Tenant, "task", t.ID, "publish_err", cause, "err", err)
	}
}

// TaskView is a task as the API shows it.
type TaskView struct {
	ID          string      `json:"id"`
	Function    string      `json:"function"`
	State       tasks.State `json:"state"`
	Attempts    int         `json:"attempts"`
	Retries     int         `json:"retries,omitempty"`
	DuplicateOf string      `json:"duplicateOf,omitempty"`
	Error       string      `json:"error,omitempty"`
	LastStatus  int         `json:"lastStatus,omitempty"`
	// Result is the function's result event (structured CloudEvent JSON).
	Result json.RawMessage `json:"result,omitempty"`
	// Event is the invocation's event; only GET /v1/tasks/{id} shows it.
	Event json.RawMessage  `json:"event,omitempty"`
	Times tasks.Timestamps `json:"times"`
}

func viewOf(t *tasks.Task, withEvent bool) TaskView {
	v := TaskView{
		ID: t.ID, Function: t.Function, State: t.State, Attempts: t.Attempts, Retries: t.Retries,
		DuplicateOf: t.DuplicateOf, Error: t.Error, LastStatus: t.LastStatus, Times: t.Times,
		Result: rawJSON(t.Result),
	}
	if withEvent {
		v.Event = rawJSON(t.Event)
	}
	return v
}

// rawJSON passes JSON through and quotes anything else as a string.
func rawJSON(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if json.Valid(b) {
		return b
	}
	q, _ := json.Marshal(string(b))
	return q
}

// storeError answers a task-store error.
func storeError(w http.ResponseWriter, err error) {
	var te *tasks.TransitionError
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		writeError(w, http.StatusNotFound, CodeNotFound, "no such task")
	case errors.As(err, &te):
		writeError(w, http.StatusConflict, CodeConflict, fmt.Sprintf("the task is %s and cannot become %s", te.From, te.To))
	case errors.Is(err, tasks.ErrNotDone):
		writeError(w, http.StatusConflict, CodeConflict, "the task is not done: cancel it first")
	case errors.Is(err, tasks.ErrInvalid):
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, err.Error())
	default:
		writeError(w, http.StatusServiceUnavailable, CodeUnavailable, "task store: "+err.Error())
	}
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request, tenant string) {
	t, err := s.store.Get(r.Context(), tenant, r.PathValue("id"))
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(t, true))
}

// ListResponse is a page of GET /v1/tasks.
type ListResponse struct {
	Tasks []TaskView `json:"tasks"`
	// Next is the cursor of the next page; empty on the last.
	Next string `json:"next,omitempty"`
}

// Filter selects tasks in list and batch requests; zero fields do not
// filter. After and Before bound the time the task was received:
// After ≤ received < Before.
type Filter struct {
	Function string        `json:"function,omitempty"`
	States   []tasks.State `json:"states,omitempty"`
	After    time.Time     `json:"after,omitzero"`
	Before   time.Time     `json:"before,omitzero"`
}

func (f Filter) query(tenant string) tasks.Query {
	return tasks.Query{Tenant: tenant, Function: f.Function, States: f.States, ReceivedAfter: f.After, ReceivedBefore: f.Before}
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request, tenant string) {
	v := r.URL.Query()
	var f Filter
	f.Function = v.Get("function")
	for _, list := range v["state"] {
		for st := range strings.SplitSeq(list, ",") {
			if st = strings.TrimSpace(st); st != "" {
				f.States = append(f.States, tasks.State(st))
			}
		}
	}
	for _, p := range []struct {
		name string
		dst  *time.Time
	}{{"after", &f.After}, {"before", &f.Before}} {
		if raw := v.Get(p.name); raw != "" {
			t, err := time.Parse(time.RFC3339Nano, raw)
			if err != nil {
				writeError(w, http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("%s: want an RFC 3339 time: %v", p.name, err))
				return
			}
			*p.dst = t
		}
	}
	q := f.query(tenant)
	if raw := v.Get("limit"); raw != "" {
		n, err := strconv.Atoi(raw)
		if err != nil {
			writeError(w, http.StatusBadRequest, CodeInvalidRequest, "limit: want a number")
			return
		}
		q.Limit = n
	}
	q.Cursor = v.Get("cursor")
	page, err := s.store.List(r.Context(), q)
	if err != nil {
		storeError(w, err)
		return
	}
	out := ListResponse{Tasks: make([]TaskView, 0, len(page.Tasks)), Next: page.Next}
	for _, t := range page.Tasks {
		out.Tasks = append(out.Tasks, viewOf(t, false))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Service) handleDelete(w http.ResponseWriter, r *http.Request, tenant string) {
	if err := s.store.Delete(r.Context(), tenant, r.PathValue("id")); err != nil {
		storeError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleTaskAction(w http.ResponseWriter, r *http.Request, tenant string) {
	id, action, _ := strings.Cut(r.PathValue("action"), ":")
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), apiTimeout)
	defer cancel()
	var t *tasks.Task
	var err error
	switch action {
	case "cancel":
		t, err = s.cancelTask(ctx, tenant, id)
	case "retry":
		t, err = s.retryTask(ctx, tenant, id)
	default:
		writeError(w, http.StatusNotFound, CodeMethod, fmt.Sprintf("no task operation %q (cancel, retry)", action))
		return
	}
	if err != nil {
		if errors.Is(err, errNotQueued) {
			w.Header().Set("Retry-After", "1")
			writeError(w, http.StatusServiceUnavailable, CodeUnavailable, err.Error())
			return
		}
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, viewOf(t, false))
}

// cancelTask cancels a task and, if this process runs it, its attempt.
func (s *Service) cancelTask(ctx context.Context, tenant, id string) (*tasks.Task, error) {
	t, err := s.store.Transition(ctx, tenant, id, tasks.Cancelled, nil)
	if err != nil {
		return nil, err
	}
	s.cancelAttempt(taskKey{tenant, id}, engine.ErrSkip)
	return t, nil
}

// errNotQueued: a retried task could not be published (it is left
// cancelled, with the reason in its error; retry again later).
var errNotQueued = errors.New("the task could not be queued")

// retryTask starts a new run of a done task and queues it.
func (s *Service) retryTask(ctx context.Context, tenant, id string) (*tasks.Task, error) {
	t, err := s.store.Transition(ctx, tenant, id, tasks.Queued, func(t *tasks.Task) error {
		if t.Labels == nil {
			t.Labels = map[string]string{}
		}
		t.Labels[LabelInstance] = s.cfg.Instance
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.fns[fnKey{tenant, t.Function}] == nil {
		// The message would wait for the function to be configured again.
		s.log.Warn("retried task of a function that is not configured", "tenant", tenant, "task", id, "function", t.Function)
	}
	if _, perr := s.publishTask(ctx, t, nil); perr != nil {
		if _, err := s.store.Transition(ctx, tenant, id, tasks.Cancelled, func(t *tasks.Task) error {
			t.Error = "retry not queued: " + perr.Error()
			return nil
		}); err != nil {
			s.log.Warn("a retried task whose publish failed stays queued; the reconciler will queue it",
				"tenant", tenant, "task", id, "err", err)
		}
		return nil, fmt.Errorf("%w: %w", errNotQueued, perr)
	}
	return t, nil
}

// BatchRequest is the body of POST /v1/tasks:batch.
type BatchRequest struct {
	Op     string `json:"op"`
	Filter Filter `json:"filter"`
}

// BatchResponse says how many tasks the operation changed.
type BatchResponse struct {
	Op      string `json:"op"`
	Changed int    `json:"changed"`
}

func (s *Service) handleBatch(w http.ResponseWriter, r *http.Request, tenant string) {
	var req BatchRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, "body: "+err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*apiTimeout)
	defer cancel()
	q := req.Filter.query(tenant)
	var n int
	var err error
	switch req.Op {
	case string(tasks.OpCancel):
		n, err = s.store.Batch(ctx, q, tasks.OpCancel)
		if err == nil {
			s.cancelAttempts(ctx, tenant, q)
		}
	case string(tasks.OpDelete):
		n, err = s.store.Batch(ctx, q, tasks.OpDelete)
	case string(tasks.OpRetry):
		n, err = s.retryAll(ctx, q)
	default:
		writeError(w, http.StatusBadRequest, CodeInvalidRequest, fmt.Sprintf("op %q: want cancel, retry or delete", req.Op))
		return
	}
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, BatchResponse{Op: req.Op, Changed: n})
}

// cancelAttempts stops this process's attempts of tasks a batch cancelled.
func (s *Service) cancelAttempts(ctx context.Context, tenant string, q tasks.Query) {
	cq, err := q.Check()
	if err != nil {
		return
	}
	s.inflight.mu.Lock()
	var keys []taskKey
	for k := range s.inflight.byTask {
		if k.tenant == tenant {
			keys = append(keys, k)
		}
	}
	s.inflight.mu.Unlock()
	for _, k := range keys {
		if t, err := s.store.Get(ctx, k.tenant, k.id); err == nil && t.State == tasks.Cancelled && cq.Match(t) {
			s.cancelAttempt(k, engine.ErrSkip)
		}
	}
}

// retryAll retries every task matching q that a retry applies to.
func (s *Service) retryAll(ctx context.Context, q tasks.Query) (int, error) {
	var states []tasks.State
	for _, st := range tasks.OpRetry.Sources() {
		if len(q.States) == 0 || containsState(q.States, st) {
			states = append(states, st)
		}
	}
	if len(states) == 0 {
		return 0, nil
	}
	q.States, q.Limit = states, tasks.MaxLimit
	// Collect first: retried tasks leave the listed states, which would
	// shift the pages under the cursor.
	var ids []string
	for {
		page, err := s.store.List(ctx, q)
		if err != nil {
			return 0, err
		}
		for _, t := range page.Tasks {
			ids = append(ids, t.ID)
		}
		if page.Next == "" {
			break
		}
		q.Cursor = page.Next
	}
	n := 0
	var errs []error
	for _, id := range ids {
		_, err := s.retryTask(ctx, q.Tenant, id)
		var te *tasks.TransitionError
		switch {
		case err == nil:
			n++
		case errors.As(err, &te), errors.Is(err, tasks.ErrNotFound):
			// Moved or deleted meanwhile.
		default:
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		return n, fmt.Errorf("%d of %d retries failed: %w", len(errs), len(ids), errs[0])
	}
	return n, nil
}

func containsState(list []tasks.State, s tasks.State) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// FunctionState is the answer of pause and resume.
type FunctionState struct {
	Function string `json:"function"`
	Paused   bool   `json:"paused"`
	// Tasks is how many tasks the operation moved (to paused, or back to queued).
	Tasks int `json:"tasks"`
}

func (s *Service) handleFunctionAction(w http.ResponseWriter, r *http.Request, tenant string) {
	name, action, _ := strings.Cut(r.PathValue("action"), ":")
	fn := s.fns[fnKey{tenant, name}]
	if fn == nil {
		writeError(w, http.StatusNotFound, CodeNotFound, fmt.Sprintf("no function %q", name))
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*apiTimeout)
	defer cancel()
	var n int
	var err error
	switch action {
	case "pause":
		n, err = s.pause(ctx, fn)
	case "resume":
		n, err = s.resume(ctx, fn)
	default:
		writeError(w, http.StatusNotFound, CodeMethod, fmt.Sprintf("no function operation %q (pause, resume)", action))
		return
	}
	if err != nil {
		storeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, FunctionState{Function: name, Paused: fn.paused.Load(), Tasks: n})
}
