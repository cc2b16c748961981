package async

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/sluicehq/sluice/connectors"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/tasks"
)

// ExtTask carries, on a queued task's message, what the task's record
// holds beyond the event, tenant and function (received and queued times,
// idempotency key, instance label): with a store that writes records
// after the 202 (tasks.DeferredCreator), a dispatcher finding the message
// without its task rebuilds the record from it. Removed before the
// function is called, like ExtTenant and ExtFunction.
const ExtTask = "sluicetask"

// origin is the decoded ExtTask of a message: the fields of its task's
// record that the event does not carry.
type origin struct {
	received, queued time.Time
	key              string
	instance         string
}

// originOf encodes t's origin as ExtTask's value.
func originOf(t *tasks.Task) string {
	v := url.Values{}
	v.Set("r", strconv.FormatInt(t.Times.Received.UnixMicro(), 10))
	if t.Times.Queued != nil {
		v.Set("q", strconv.FormatInt(t.Times.Queued.UnixMicro(), 10))
	}
	if t.IdempotencyKey != "" {
		v.Set("k", t.IdempotencyKey)
	}
	if i := t.Labels[LabelInstance]; i != "" {
		v.Set("i", i)
	}
	return v.Encode()
}

// parseOrigin decodes ExtTask's value; ok is false when the message has
// none (published before it existed) or a malformed one.
func parseOrigin(s string) (o origin, ok bool) {
	v, err := url.ParseQuery(s)
	if err != nil || s == "" {
		return origin{}, false
	}
	r, err := strconv.ParseInt(v.Get("r"), 10, 64)
	if err != nil {
		return origin{}, false
	}
	o.received = time.UnixMicro(r).UTC()
	o.queued = o.received
	if q := v.Get("q"); q != "" {
		n, err := strconv.ParseInt(q, 10, 64)
		if err != nil {
			return origin{}, false
		}
		o.queued = time.UnixMicro(n).UTC()
	}
	o.key, o.instance = v.Get("k"), v.Get("i")
	return o, true
}

// takeOrigin removes ExtTask from the attempt's event (the function must
// not see it) and keeps what it says for restore.
func (a *attempt) takeOrigin() {
	a.origin = originIn(a.msg)
	a.msg.Event.SetExtension(ExtTask, nil)
}

// originIn decodes msg's ExtTask (nil: none, or malformed).
func originIn(msg *connectors.Message) *origin {
	raw, _ := msg.Event.Extensions()[ExtTask].(string)
	if o, ok := parseOrigin(raw); ok {
		return &o
	}
	return nil
}

// restore rebuilds the record of a task whose message arrived without it
// (see restoreTask), for the attempt's function.
func (h *hooks) restore(ctx context.Context, a *attempt) error {
	return h.s.restoreTask(ctx, a.key, h.fn.key.name, h.fn.dedup, a.msg, a.origin)
}

// restoreTask rebuilds the record of task k, of function (dedup: its
// window, 0 for the store's), from its message msg and the message's
// origin o: with a deferred-create store, the process that accepted it
// stopped before writing it (or the write failed). nil: the record is
// there now. engine.ErrSkip: there is nothing to run — the task was
// deleted (a tombstone), or the store writes every record before the
// publish (so a missing record means deleted), or the message cannot
// rebuild one (an operator retry's message, whose record was durable, or
// a message without ExtTask). Anything else is a storage failure.
func (s *Service) restoreTask(ctx context.Context, k taskKey, function string, dedup time.Duration, msg *connectors.Message, o *origin) error {
	dc, ok := s.store.(tasks.DeferredCreator)
	if !ok || o == nil || msg.Coordinates.ID != k.id {
		return engine.ErrSkip
	}
	ev := msg.Event.Clone()
	for _, ext := range []string{ExtTenant, ExtFunction, ExtTask} {
		ev.SetExtension(ext, nil)
	}
	event, err := json.Marshal(ev)
	if err != nil {
		return fmt.Errorf("%w: task %s: event: %w", engine.ErrSkip, k.id, err)
	}
	t := &tasks.Task{
		ID: k.id, Tenant: k.tenant, Function: function, Event: event,
		IdempotencyKey: o.key, DedupWindow: dedup,
		Times: tasks.Timestamps{Received: o.received, Queued: &o.queued},
	}
	if o.instance != "" {
		t.Labels = map[string]string{LabelInstance: o.instance}
	}
	err = dc.Restore(ctx, t)
	switch {
	case err == nil:
		s.rec.Restored(t.Tenant)
		s.log.Info("task record restored from its queue message", "tenant", t.Tenant, "task", t.ID, "function", t.Function)
		return nil
	case errors.Is(err, tasks.ErrExists):
		return nil
	case errors.Is(err, tasks.ErrDeleted):
		return engine.ErrSkip
	}
	return err
}
