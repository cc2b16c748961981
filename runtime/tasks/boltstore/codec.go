package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/runtime/tasks"
)

// Task records are stored in a compact binary form: every write of the
// store's single writer decodes and encodes one, so their cost bounds the
// store's throughput, and the event (about a KiB, opaque here) is copied
// as is instead of going through base64 in JSON. Layout (after the format
// byte recordV1; integers are varints, strings and byte fields a uvarint
// length then the bytes):
//
//	id function state key dupOf event result error
//	attempts retries lastStatus version
//	received(µs) stamps(bit i set: stamp i present) [queued dispatched started finished delivered](µs)
//	labels(count) [key value]...
//
// Records written before this format are JSON objects (first byte '{')
// and still read.
const recordV1 = 1

func encode(t *tasks.Task) []byte {
	b := make([]byte, 0, 96+len(t.ID)+len(t.Function)+len(t.IdempotencyKey)+len(t.Event)+len(t.Result)+len(t.Error))
	b = append(b, recordV1)
	for _, s := range []string{t.ID, t.Function, string(t.State), t.IdempotencyKey, t.DuplicateOf} {
		b = appendBytes(b, s)
	}
	b = appendBytes(b, t.Event)
	b = appendBytes(b, t.Result)
	b = appendBytes(b, t.Error)
	for _, n := range []int64{int64(t.Attempts), int64(t.Retries), int64(t.LastStatus), t.Version, t.Times.Received.UnixMicro()} {
		b = binary.AppendVarint(b, n)
	}
	stamps := [...]*time.Time{t.Times.Queued, t.Times.Dispatched, t.Times.Started, t.Times.Finished, t.Times.Delivered}
	var present byte
	for i, p := range stamps {
		if p != nil {
			present |= 1 << i
		}
	}
	b = append(b, present)
	for _, p := range stamps {
		if p != nil {
			b = binary.AppendVarint(b, p.UnixMicro())
		}
	}
	b = binary.AppendVarint(b, int64(len(t.Labels)))
	for k, v := range t.Labels {
		b = appendBytes(b, k)
		b = appendBytes(b, v)
	}
	return b
}

func appendBytes[S string | []byte](b []byte, s S) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// errTruncated: a record ends early.
var errTruncated = errors.New("truncated")

// reader decodes a record; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) bytes() []byte {
	n, k := binary.Uvarint(r.b)
	if r.err != nil || k <= 0 || uint64(len(r.b)-k) < n {
		r.err = errTruncated
		return nil
	}
	v := r.b[k : k+int(n)]
	r.b = r.b[k+int(n):]
	return v
}

func (r *reader) str() string { return string(r.bytes()) }

// copied returns a byte field as a fresh slice (nil when empty): values a
// bbolt read returns are only valid during the transaction.
func (r *reader) copied() []byte {
	v := r.bytes()
	if len(v) == 0 {
		return nil
	}
	return append([]byte(nil), v...)
}

func (r *reader) int() int64 {
	n, k := binary.Varint(r.b)
	if r.err != nil || k <= 0 {
		r.err = errTruncated
		return 0
	}
	r.b = r.b[k:]
	return n
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errTruncated
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func decode(tenant string, v []byte) (*tasks.Task, error) {
	if len(v) > 0 && v[0] == '{' {
		return decodeJSON(tenant, v)
	}
	if len(v) == 0 || v[0] != recordV1 {
		return nil, errors.New("corrupt task record: unknown format")
	}
	r := &reader{b: v[1:]}
	t := &tasks.Task{Tenant: tenant}
	t.ID, t.Function, t.State, t.IdempotencyKey, t.DuplicateOf = r.str(), r.str(), tasks.State(r.str()), r.str(), r.str()
	t.Event, t.Result, t.Error = r.copied(), r.copied(), r.str()
	t.Attempts, t.Retries, t.LastStatus, t.Version = int(r.int()), int(r.int()), int(r.int()), r.int()
	t.Times.Received = time.UnixMicro(r.int()).UTC()
	present := r.byte()
	for i, p := range [...]**time.Time{&t.Times.Queued, &t.Times.Dispatched, &t.Times.Started, &t.Times.Finished, &t.Times.Delivered} {
		if present&(1<<i) != 0 {
			ts := time.UnixMicro(r.int()).UTC()
			*p = &ts
		}
	}
	if n := r.int(); n > int64(len(r.b)) {
		r.err = errTruncated
	} else if n > 0 {
		t.Labels = make(map[string]string, n)
		for range n {
			k := r.str()
			t.Labels[k] = r.str()
		}
	}
	if r.err != nil {
		return nil, fmt.Errorf("corrupt task record: %w", r.err)
	}
	return t, nil
}
