package tenancy

import "sync"

// DRR is a weighted deficit round robin scheduler over FIFO queues of items
// keyed by flow (a tenant, or a queue). Next serves the flows with items in
// rounds: on its turn a flow receives weight×quantum credit and is served
// while it has credit and items, so over any stretch in which flows stay
// backlogged each receives a share of items proportional to its weight.
//
// Every item costs one unit (a task). A flow with nothing queued leaves the
// round and loses its remaining credit, so idleness earns nothing: a flow
// coming back joins the end of the round and gets at most weight×quantum
// items before every other backlogged flow is served again.
//
// Push, Next, Pause and Resume are O(1) (amortised for the FIFO). A flow is
// remembered (weight, paused state) until Remove, so keys should come from a
// bounded set such as tenants or queues. DRR is safe for concurrent use;
// typically queue readers Push and one dispatcher calls Next, waiting on
// Ready when Next finds nothing.
type DRR[T any] struct {
	quantum int

	mu         sync.Mutex
	flows      map[string]*flow[T]
	head, tail *flow[T] // the round: flows with items, not paused
	n          int
	ready      chan struct{}
}

type flow[T any] struct {
	key        string
	weight     int
	items      fifo[T]
	deficit    int
	granted    bool // received its credit for the current turn
	paused     bool
	linked     bool // in the round
	prev, next *flow[T]
}

// NewDRR returns a scheduler giving each flow weight×quantum items per turn
// (quantum < 1 means 1). A larger quantum serves longer runs of one flow:
// fewer switches, coarser interleaving.
func NewDRR[T any](quantum int) *DRR[T] {
	return &DRR[T]{quantum: max(1, quantum), flows: map[string]*flow[T]{}, ready: make(chan struct{}, 1)}
}

func (d *DRR[T]) flow(key string) *flow[T] {
	f, ok := d.flows[key]
	if !ok {
		f = &flow[T]{key: key, weight: 1}
		d.flows[key] = f
	}
	return f
}

// SetWeight sets a flow's weight (values < 1 mean 1); it applies from the
// flow's next turn. Unknown flows are created empty.
func (d *DRR[T]) SetWeight(key string, weight int) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flow(key).weight = max(1, weight)
}

// Push appends item to the flow's FIFO (creating the flow with weight 1 if
// needed).
func (d *DRR[T]) Push(key string, item T) {
	d.mu.Lock()
	f := d.flow(key)
	f.items.push(item)
	d.n++
	if !f.linked && !f.paused {
		d.link(f)
	}
	d.mu.Unlock()
	d.signal()
}

// Next removes and returns the next item in fair order, or ok=false when no
// unpaused flow has items.
func (d *DRR[T]) Next() (key string, item T, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.head
	if f == nil {
		return "", item, false
	}
	key, item = d.serve(f)
	return key, item, true
}

// serve pops the head flow's next item and advances the round.
func (d *DRR[T]) serve(f *flow[T]) (string, T) {
	if !f.granted {
		f.deficit += f.weight * d.quantum
		f.granted = true
	}
	item := f.items.pop()
	d.n--
	f.deficit--
	switch {
	case f.items.len() == 0:
		d.unlink(f) // idle flows keep no credit
	case f.deficit <= 0:
		d.unlink(f) // turn over: to the end of the round
		d.link(f)
	}
	return f.key, item
}

// NextIf is Next for a dispatcher that must check a flow's admission first
// (its tenant's share of workers, its concurrency quota): a flow whose admit
// returns false is paused, keeping its items, and the next flow is tried.
// The caller Resumes a paused flow when its admission may succeed again
// (Shares and Limits report that through their onFree callbacks). admit runs
// with the DRR's lock held: it must not call the DRR. Each refusal pauses a
// flow, so the work is O(1) amortised over Resume calls.
func (d *DRR[T]) NextIf(admit func(key string) bool) (key string, item T, ok bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for f := d.head; f != nil; f = d.head {
		if admit(f.key) {
			key, item = d.serve(f)
			return key, item, true
		}
		f.paused = true
		d.unlink(f)
	}
	return "", item, false
}

// Pause takes a flow out of the round (its items stay queued) — e.g. while
// its tenant is at its concurrency quota — without it earning credit.
func (d *DRR[T]) Pause(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	f := d.flow(key)
	f.paused = true
	if f.linked {
		d.unlink(f)
	}
}

// Resume puts a paused flow back at the end of the round.
func (d *DRR[T]) Resume(key string) {
	d.mu.Lock()
	f, ok := d.flows[key]
	resumed := ok && f.paused
	if resumed {
		f.paused = false
		if f.items.len() > 0 {
			d.link(f)
		}
	}
	d.mu.Unlock()
	if resumed {
		d.signal()
	}
}

// Remove deletes a flow and returns its queued items in order.
func (d *DRR[T]) Remove(key string) []T {
	d.mu.Lock()
	defer d.mu.Unlock()
	f, ok := d.flows[key]
	if !ok {
		return nil
	}
	if f.linked {
		d.unlink(f)
	}
	delete(d.flows, key)
	items := f.items.drain()
	d.n -= len(items)
	return items
}

// Len is the number of queued items over all flows, paused ones included.
func (d *DRR[T]) Len() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.n
}

// LenOf is the number of items queued in one flow.
func (d *DRR[T]) LenOf(key string) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if f, ok := d.flows[key]; ok {
		return f.items.len()
	}
	return 0
}

// Ready is signalled (capacity one, never closed) after a Push or Resume, so
// a dispatcher whose Next found nothing can wait for work.
func (d *DRR[T]) Ready() <-chan struct{} { return d.ready }

func (d *DRR[T]) signal() {
	select {
	case d.ready <- struct{}{}:
	default:
	}
}

// link appends f to the round with a fresh turn.
func (d *DRR[T]) link(f *flow[T]) {
	f.deficit, f.granted, f.linked = 0, false, true
	f.prev, f.next = d.tail, nil
	if d.tail != nil {
		d.tail.next = f
	} else {
		d.head = f
	}
	d.tail = f
}

func (d *DRR[T]) unlink(f *flow[T]) {
	if f.prev != nil {
		f.prev.next = f.next
	} else {
		d.head = f.next
	}
	if f.next != nil {
		f.next.prev = f.prev
	} else {
		d.tail = f.prev
	}
	f.prev, f.next, f.linked = nil, nil, false
	f.deficit, f.granted = 0, false
}

// fifo is a slice-backed queue; popped slots are cleared so items can be
// collected, and the backing array is compacted when half of it is dead.
type fifo[T any] struct {
	items []T
	head  int
}

func (q *fifo[T]) len() int { return len(q.items) - q.head }

func (q *fifo[T]) push(v T) { q.items = append(q.items, v) }

func (q *fifo[T]) pop() T {
	var zero T
	v := q.items[q.head]
	q.items[q.head] = zero
	q.head++
	switch {
	case q.head == len(q.items):
		q.items, q.head = q.items[:0], 0
	case q.head > 32 && q.head*2 > len(q.items):
		n := copy(q.items, q.items[q.head:])
		clear(q.items[n:])
		q.items, q.head = q.items[:n], 0
	}
	return v
}

func (q *fifo[T]) drain() []T {
	out := append([]T(nil), q.items[q.head:]...)
	q.items, q.head = nil, 0
	return out
}
