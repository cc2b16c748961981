package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/sluicehq/sluice/runtime/invoke"
)

// resultSource is the source attribute of every result event.
const resultSource = "sluice-example-function"

// config is the handler's behaviour; main fills it from flags.
type config struct {
	FailRate       float64       // fraction of calls answered 503
	Seed           uint64        // seeds the fail-rate draw
	PoisonPrefix   string        // events whose id or data.id has it → 400
	Latency        time.Duration // service time per call
	Capacity       int           // in-flight calls beyond this → OverloadStatus; 0 = unlimited
	Schedule       []step        // changes Capacity over time (from start)
	OverloadStatus int           // default 429
	RetryAfter     time.Duration // Retry-After on overload answers; 0 = none
	Ledger         io.Writer     // one line per 2xx-answered event; nil = none
	CheckOrder     bool          // track per-key seq order
	Noop           bool          // 200, no body, nothing else
	Log            *slog.Logger  // one line per event; nil = silent
	Now            func() time.Time
}

// step sets the capacity to K from At after start.
type step struct {
	At time.Duration
	K  int
}

// parseSchedule parses "0s:32,20s:16,40s:64".
func parseSchedule(s string) ([]step, error) {
	if s == "" {
		return nil, nil
	}
	var steps []step
	for _, part := range strings.Split(s, ",") {
		at, k, ok := strings.Cut(strings.TrimSpace(part), ":")
		if !ok {
			return nil, fmt.Errorf("capacity schedule %q: want DURATION:K,...", s)
		}
		d, err := time.ParseDuration(at)
		if err != nil || d < 0 {
			return nil, fmt.Errorf("capacity schedule %q: bad offset %q", s, at)
		}
		n, err := strconv.Atoi(k)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("capacity schedule %q: bad capacity %q", s, k)
		}
		steps = append(steps, step{At: d, K: n})
	}
	sort.SliceStable(steps, func(i, j int) bool { return steps[i].At < steps[j].At })
	return steps, nil
}

// handler is the example function. Safe for concurrent use.
type handler struct {
	cfg   config
	start time.Time

	randMu sync.Mutex
	rand   *rand.Rand

	ledgerMu sync.Mutex

	calls, events, inFlight, inFlightMax atomic.Int64
	byStatus                             [600]atomic.Int64

	orderMu sync.Mutex
	order   orderStats
	lastSeq map[string]int64
}

// orderStats counts per-key sequence anomalies (-check-order).
type orderStats struct {
	Checked    int64 `json:"checked"`    // events with a key and seq
	Violations int64 `json:"violations"` // seq below the highest seen for its key
	Duplicates int64 `json:"duplicates"` // seq equal to the highest seen
	Gaps       int64 `json:"gaps"`       // seq more than one above the highest seen
	Unparsed   int64 `json:"unparsed"`   // events without {"key":..,"seq":N} data
	Keys       int   `json:"keys"`
}

// stats is the GET /stats document.
type stats struct {
	Calls       int64            `json:"calls"`
	Events      int64            `json:"events"`
	ByStatus    map[string]int64 `json:"byStatus"`
	InFlight    int64            `json:"inFlight"`
	InFlightMax int64            `json:"inFlightMax"`
	Capacity    int              `json:"capacity"`
	Order       *orderStats      `json:"order,omitempty"`
}

func newHandler(cfg config) (*handler, error) {
	if cfg.FailRate < 0 || cfg.FailRate > 1 {
		return nil, fmt.Errorf("fail rate %v: want 0..1", cfg.FailRate)
	}
	if cfg.Capacity < 0 {
		return nil, fmt.Errorf("capacity %d: must not be negative", cfg.Capacity)
	}
	if cfg.OverloadStatus == 0 {
		cfg.OverloadStatus = http.StatusTooManyRequests
	}
	if cfg.OverloadStatus < 400 || cfg.OverloadStatus > 599 {
		return nil, fmt.Errorf("overload status %d: want 4xx or 5xx", cfg.OverloadStatus)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &handler{
		cfg:     cfg,
		start:   cfg.Now(),
		rand:    rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		lastSeq: map[string]int64{},
	}, nil
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/stats":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(h.stats())
	case r.Method == http.MethodGet && r.URL.Path == "/healthz":
		_, _ = io.WriteString(w, "ok\n")
	case r.Method == http.MethodPost:
		h.invoke(w, r)
	default:
		http.Error(w, "POST CloudEvents, or GET /stats or /healthz", http.StatusMethodNotAllowed)
	}
}

func (h *handler) stats() stats {
	s := stats{
		Calls:       h.calls.Load(),
		Events:      h.events.Load(),
		ByStatus:    map[string]int64{},
		InFlight:    h.inFlight.Load(),
		InFlightMax: h.inFlightMax.Load(),
		Capacity:    h.capacity(),
	}
	for code := range h.byStatus {
		if n := h.byStatus[code].Load(); n > 0 {
			s.ByStatus[strconv.Itoa(code)] = n
		}
	}
	if h.cfg.CheckOrder {
		h.orderMu.Lock()
		o := h.order
		o.Keys = len(h.lastSeq)
		h.orderMu.Unlock()
		s.Order = &o
	}
	return s
}

// capacity is the in-flight bound now (0 = unlimited).
func (h *handler) capacity() int {
	k := h.cfg.Capacity
	elapsed := h.cfg.Now().Sub(h.start)
	for _, st := range h.cfg.Schedule {
		if st.At > elapsed {
			break
		}
		k = st.K
	}
	return k
}

// input is one received event with what its data says about it.
type input struct {
	e      cloudevents.Event
	dataID string
	key    string // -check-order key; "" = none
	seq    int64
}

// ledgerKey names an event in the ledger: its data "id" if any, else its
// CloudEvents id.
func (in *input) ledgerKey() string {
	if in.dataID != "" {
		return in.dataID
	}
	return in.e.ID()
}

func (h *handler) invoke(w http.ResponseWriter, r *http.Request) {
	h.calls.Add(1)
	n := h.inFlight.Add(1)
	defer h.inFlight.Add(-1)
	for {
		if m := h.inFlightMax.Load(); n <= m || h.inFlightMax.CompareAndSwap(m, n) {
			break
		}
	}

	if h.cfg.Noop {
		_, _ = io.Copy(io.Discard, r.Body)
		h.answer(w, http.StatusOK, "")
		return
	}
	if k := h.capacity(); k > 0 && n > int64(k) {
		if h.cfg.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(h.cfg.RetryAfter.Seconds()))))
		}
		h.answer(w, h.cfg.OverloadStatus, fmt.Sprintf("overloaded: %d in flight, capacity %d", n, k))
		return
	}

	msg := cehttp.NewMessageFromHttpRequest(r)
	enc := msg.ReadEncoding()
	ins, err := decode(r.Context(), msg, enc)
	if err != nil {
		h.answer(w, http.StatusBadRequest, "not a CloudEvent: "+err.Error())
		return
	}
	h.events.Add(int64(len(ins)))
	if h.cfg.CheckOrder {
		h.trackOrder(ins)
	}

	if h.cfg.Latency > 0 {
		t := time.NewTimer(h.cfg.Latency)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			h.byStatus[0].Add(1) // the caller went away; nothing answered
			return
		}
	}
	if h.cfg.FailRate > 0 && h.draw() < h.cfg.FailRate {
		h.logEvents(ins, http.StatusServiceUnavailable)
		h.answer(w, http.StatusServiceUnavailable, "injected failure")
		return
	}

	var ms invoke.MultiStatus
	var ok []*input
	for i := range ins {
		if h.poisoned(&ins[i]) {
			ms.Failed = append(ms.Failed, invoke.FailedEvent{Index: i, Status: http.StatusBadRequest,
				Reason: fmt.Sprintf("poison event %q", ins[i].ledgerKey())})
			h.log(&ins[i], http.StatusBadRequest)
			continue
		}
		ok = append(ok, &ins[i])
	}
	if enc != binding.EncodingBatch && len(ms.Failed) > 0 {
		h.answer(w, http.StatusBadRequest, ms.Failed[0].Reason)
		return
	}
	if err := h.record(ok); err != nil {
		h.answer(w, http.StatusInternalServerError, "ledger: "+err.Error())
		return
	}
	for _, in := range ok {
		ms.Results = append(ms.Results, result(&in.e))
		h.log(in, http.StatusOK)
	}

	switch {
	case enc == binding.EncodingBatch && len(ms.Failed) > 0:
		h.count(http.StatusMultiStatus)
		writeJSON(w, http.StatusMultiStatus, "application/json", ms)
	case enc == binding.EncodingBatch:
		h.count(http.StatusOK)
		writeJSON(w, http.StatusOK, event.ApplicationCloudEventsBatchJSON, ms.Results)
	default:
		h.count(http.StatusOK)
		ctx := r.Context()
		if enc == binding.EncodingStructured {
			ctx = binding.WithForceStructured(ctx)
		}
		// Errors here mean the caller went away mid-answer.
		_ = cehttp.WriteResponseWriter(ctx, binding.ToMessage(&ms.Results[0]), http.StatusOK, w)
	}
}

// decode reads one event (binary or structured) or a batch.
func decode(ctx context.Context, msg *cehttp.Message, enc binding.Encoding) ([]input, error) {
	var events []cloudevents.Event
	switch enc {
	case binding.EncodingBatch:
		var err error
		if events, err = binding.ToEvents(ctx, msg, msg.BodyReader); err != nil {
			return nil, err
		}
	case binding.EncodingBinary, binding.EncodingStructured:
		e, err := binding.ToEvent(ctx, msg)
		if err != nil {
			return nil, err
		}
		events = []cloudevents.Event{*e}
	default:
		return nil, fmt.Errorf("no ce-specversion header and no CloudEvents content type")
	}
	ins := make([]input, len(events))
	for i, e := range events {
		if err := e.Validate(); err != nil {
			return nil, fmt.Errorf("event %d: %w", i, err)
		}
		ins[i] = input{e: e}
		var d struct {
			ID  string          `json:"id"`
			Key json.RawMessage `json:"key"`
			Seq *int64          `json:"seq"`
		}
		if json.Unmarshal(e.Data(), &d) == nil {
			ins[i].dataID = d.ID
			if len(d.Key) > 0 && d.Seq != nil {
				ins[i].key, ins[i].seq = string(d.Key), *d.Seq
			}
		}
	}
	return ins, nil
}

func (h *handler) trackOrder(ins []input) {
	h.orderMu.Lock()
	defer h.orderMu.Unlock()
	for _, in := range ins {
		if in.key == "" {
			h.order.Unparsed++
			continue
		}
		h.order.Checked++
		last, seen := h.lastSeq[in.key]
		switch {
		case !seen:
		case in.seq < last:
			h.order.Violations++
			continue
		case in.seq == last:
			h.order.Duplicates++
		case in.seq > last+1:
			h.order.Gaps++
		}
		h.lastSeq[in.key] = in.seq
	}
}

func (h *handler) draw() float64 {
	h.randMu.Lock()
	defer h.randMu.Unlock()
	return h.rand.Float64()
}

func (h *handler) poisoned(in *input) bool {
	p := h.cfg.PoisonPrefix
	return p != "" && (strings.HasPrefix(in.e.ID(), p) || strings.HasPrefix(in.dataID, p))
}

// record appends the ledger lines of events about to be answered 2xx, in
// one unbuffered write, before the answer is sent: the ledger never misses
// an answered event (it may list one whose answer was lost in transit).
func (h *handler) record(ok []*input) error {
	if h.cfg.Ledger == nil || len(ok) == 0 {
		return nil
	}
	var b strings.Builder
	for _, in := range ok {
		b.WriteString(in.ledgerKey())
		b.WriteByte('\n')
	}
	h.ledgerMu.Lock()
	defer h.ledgerMu.Unlock()
	_, err := io.WriteString(h.cfg.Ledger, b.String())
	return err
}

// result builds the answer to one event.
func result(in *cloudevents.Event) cloudevents.Event {
	out := cloudevents.NewEvent()
	out.SetID(in.ID() + ".result")
	out.SetSource(resultSource)
	out.SetType(in.Type() + ".result")
	if s := in.Subject(); s != "" {
		out.SetSubject(s)
	}
	out.SetTime(time.Now())
	processed := json.RawMessage(in.Data())
	if !json.Valid(processed) {
		b, _ := json.Marshal(string(in.Data()))
		processed = b
	}
	_ = out.SetData(cloudevents.ApplicationJSON, struct {
		Processed json.RawMessage `json:"processed"`
		By        string          `json:"by"`
	}{processed, "example"})
	for _, ext := range []string{"traceparent", "tracestate"} {
		if v, ok := in.Extensions()[ext]; ok {
			out.SetExtension(ext, v)
		}
	}
	return out
}

func (h *handler) count(status int) {
	if status > 0 && status < len(h.byStatus) {
		h.byStatus[status].Add(1)
	}
}

func (h *handler) answer(w http.ResponseWriter, status int, body string) {
	h.count(status)
	if body == "" {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.WriteString(w, body+"\n")
}

func writeJSON(w http.ResponseWriter, status int, contentType string, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

func (h *handler) logEvents(ins []input, status int) {
	for i := range ins {
		h.log(&ins[i], status)
	}
}

func (h *handler) log(in *input, status int) {
	if h.cfg.Log == nil {
		return
	}
	h.cfg.Log.Info("event", "id", in.e.ID(), "type", in.e.Type(), "source", in.e.Source(),
		"subject", in.e.Subject(), "status", status)
}
