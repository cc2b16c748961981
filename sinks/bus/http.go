package bus

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	cloudevents "github.com/cloudevents/sdk-go/v2"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"

	"github.com/sluicehq/sluice/runtime/tenancy"
	"github.com/sluicehq/sluice/sinks"
)

// HTTP API defaults and headers.
const (
	// DefaultMaxBodyBytes bounds a request body when HandlerOptions leaves
	// it zero.
	DefaultMaxBodyBytes = 1 << 20
	// TenantHeader names the tenant of a request when no API keys are
	// configured and several tenants have a bus of the requested name.
	TenantHeader = "Sluice-Tenant"
	// APIKeyHeader carries an API key (or "Authorization: Bearer KEY").
	APIKeyHeader = "X-API-Key"
	// BatchContentType is the CloudEvents JSON batch format.
	BatchContentType = "application/cloudevents-batch+json"
)

// HandlerOptions configure the bus API.
type HandlerOptions struct {
	// Auth maps API keys to tenants: every request must carry a key of the
	// bus's tenant. Nil (a configuration without Tenant documents) accepts
	// requests without a key.
	Auth *tenancy.Authenticator
	// MaxBodyBytes bounds a request body (one event, or a whole batch);
	// larger requests get 413. Zero means DefaultMaxBodyBytes.
	MaxBodyBytes int64
}

// Handler returns the bus API:
//
//	GET  /v1/buses                      the tenant's buses with each target's state and backlog
//	GET  /v1/buses/{name}               one bus
//	POST /v1/buses/{name}/events        put events: binary or structured CloudEvent, or a batch
//	                                    (application/cloudevents-batch+json); 202 once durable
//	POST /v1/buses/{name}/replays       {"from": RFC 3339, "to": RFC 3339 (default now), "rule": optional} → 202 replay
//	GET  /v1/buses/{name}/replays       the bus's replays
//	GET  /v1/buses/{name}/replays/{id}  one replay's progress
//
// Errors are JSON {"error": "..."}: 400 (not a valid CloudEvent, bad
// replay request), 401 (missing or unknown API key), 404 (no such bus for
// the tenant, or replay), 413 (body or event too large), 503 with
// Retry-After (storage full or unavailable: retry; putting the same
// events again is safe).
func (s *Set) Handler(opts HandlerOptions) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	h := &api{set: s, opts: opts}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/buses", h.listBuses)
	mux.HandleFunc("GET /v1/buses/{name}", h.getBus)
	mux.HandleFunc("POST /v1/buses/{name}/events", h.putEvents)
	mux.HandleFunc("POST /v1/buses/{name}/replays", h.startReplay)
	mux.HandleFunc("GET /v1/buses/{name}/replays", h.listReplays)
	mux.HandleFunc("GET /v1/buses/{name}/replays/{id}", h.getReplay)
	return mux
}

type api struct {
	set  *Set
	opts HandlerOptions
}

type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, apiError{Error: fmt.Sprintf(format, args...)})
}

// bus resolves the request's bus, answering the error itself when it
// cannot (ok false).
func (h *api) bus(w http.ResponseWriter, r *http.Request) (*Bus, bool) {
	name := r.PathValue("name")
	if h.opts.Auth != nil {
		tenant, err := h.opts.Auth.Authenticate(apiKey(r))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			fail(w, http.StatusUnauthorized, "missing or unknown API key")
			return nil, false
		}
		b, err := h.set.Lookup(tenant, name)
		if err != nil {
			fail(w, http.StatusNotFound, "no bus %q", name)
			return nil, false
		}
		return b, true
	}
	if tenant := r.Header.Get(TenantHeader); tenant != "" {
		b, err := h.set.Lookup(tenant, name)
		if err != nil {
			fail(w, http.StatusNotFound, "no bus %q of tenant %q", name, tenant)
			return nil, false
		}
		return b, true
	}
	var found []*Bus
	for _, b := range h.set.buses {
		if b.name == name {
			found = append(found, b)
		}
	}
	switch len(found) {
	case 0:
		fail(w, http.StatusNotFound, "no bus %q", name)
		return nil, false
	case 1:
		return found[0], true
	}
	fail(w, http.StatusBadRequest, "several tenants have a bus %q: name the tenant in the %s header", name, TenantHeader)
	return nil, false
}

// apiKey is the request's API key: "Authorization: Bearer KEY" or the
// X-API-Key header.
func apiKey(r *http.Request) string {
	if k := r.Header.Get(APIKeyHeader); k != "" {
		return k
	}
	auth := r.Header.Get("Authorization")
	if len(auth) > 7 && strings.EqualFold(auth[:7], "bearer ") {
		return strings.TrimSpace(auth[7:])
	}
	return ""
}

// readBody reads the whole body within the size limit, answering 413
// itself when it is over (ok false).
func (h *api) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			fail(w, http.StatusRequestEntityTooLarge, "request body over %d bytes", h.opts.MaxBodyBytes)
		} else {
			fail(w, http.StatusBadRequest, "reading the request body: %v", err)
		}
		return nil, false
	}
	return body, true
}

// putResponse answers a successful put.
type putResponse struct {
	Accepted int `json:"accepted"`
}

func (h *api) putEvents(w http.ResponseWriter, r *http.Request) {
	b, ok := h.bus(w, r)
	if !ok {
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	events, err := decodeEvents(r)
	if err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	if err := b.Put(r.Context(), events); err != nil {
		status := http.StatusServiceUnavailable
		switch {
		case errors.Is(err, ErrInvalidEvent), errors.Is(err, sinks.ErrRejected):
			status = http.StatusBadRequest
		case errors.Is(err, ErrTooLarge):
			status = http.StatusRequestEntityTooLarge
		case errors.Is(err, ErrFull):
			w.Header().Set("Retry-After", "5")
		default:
			w.Header().Set("Retry-After", "1")
			h.set.log.Warn("bus API: put failed", "bus", b.id, "events", len(events), "err", err)
		}
		fail(w, status, "%v", err)
		return
	}
	writeJSON(w, http.StatusAccepted, putResponse{Accepted: len(events)})
}

// decodeEvents reads the request's events: a batch, a structured event or
// a binary one.
func decodeEvents(r *http.Request) ([]cloudevents.Event, error) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt == BatchContentType {
		events, err := cehttp.NewEventsFromHTTPRequest(r)
		if err != nil {
			return nil, fmt.Errorf("invalid CloudEvents batch: %w", err)
		}
		if len(events) == 0 {
			return nil, errors.New("empty CloudEvents batch")
		}
		for i := range events {
			if err := events[i].Validate(); err != nil {
				return nil, fmt.Errorf("event %d of the batch: %w", i, err)
			}
		}
		return events, nil
	}
	if mt != "application/cloudevents+json" && r.Header.Get("Ce-Specversion") == "" {
		return nil, errors.New("not a CloudEvent: send ce-* headers (binary mode), application/cloudevents+json or " + BatchContentType)
	}
	ev, err := cehttp.NewEventFromHTTPRequest(r)
	if err != nil {
		return nil, fmt.Errorf("invalid CloudEvent: %w", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, fmt.Errorf("invalid CloudEvent: %w", err)
	}
	return []cloudevents.Event{*ev}, nil
}

// replayRequest is the body of POST /v1/buses/{name}/replays.
type replayRequest struct {
	From *time.Time `json:"from"`
	To   *time.Time `json:"to"`
	Rule string     `json:"rule"`
}

func (h *api) startReplay(w http.ResponseWriter, r *http.Request) {
	b, ok := h.bus(w, r)
	if !ok {
		return
	}
	body, ok := h.readBody(w, r)
	if !ok {
		return
	}
	var req replayRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "replay request: %v", err)
		return
	}
	if req.From == nil {
		fail(w, http.StatusBadRequest, "replay request: from is required (RFC 3339)")
		return
	}
	to := time.Now()
	if req.To != nil {
		to = *req.To
	}
	rp, err := b.StartReplay(*req.From, to, req.Rule)
	switch {
	case errors.Is(err, ErrClosed):
		fail(w, http.StatusServiceUnavailable, "%v", err)
	case err != nil:
		fail(w, http.StatusBadRequest, "%v", err)
	default:
		w.Header().Set("Location", "/v1/buses/"+b.name+"/replays/"+rp.ID)
		writeJSON(w, http.StatusAccepted, rp)
	}
}

func (h *api) listReplays(w http.ResponseWriter, r *http.Request) {
	b, ok := h.bus(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, b.Replays())
}

func (h *api) getReplay(w http.ResponseWriter, r *http.Request) {
	b, ok := h.bus(w, r)
	if !ok {
		return
	}
	rp, ok := b.Replay(r.PathValue("id"))
	if !ok {
		fail(w, http.StatusNotFound, "no replay %q on bus %q", r.PathValue("id"), b.name)
		return
	}
	writeJSON(w, http.StatusOK, rp)
}

// listBuses answers the buses the request may see: the key's tenant's, or
// every bus without API keys.
func (h *api) listBuses(w http.ResponseWriter, r *http.Request) {
	tenant := ""
	if h.opts.Auth != nil {
		t, err := h.opts.Auth.Authenticate(apiKey(r))
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="sluice"`)
			fail(w, http.StatusUnauthorized, "missing or unknown API key")
			return
		}
		tenant = t
	}
	out := []BusStatus{}
	for _, b := range h.set.buses {
		if tenant == "" || b.tenant == tenant {
			out = append(out, b.Status(r.Context()))
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *api) getBus(w http.ResponseWriter, r *http.Request) {
	b, ok := h.bus(w, r)
	if !ok {
		return
	}
	writeJSON(w, http.StatusOK, b.Status(r.Context()))
}
