// Package consumer schedules messages read from a source onto workers while
// enforcing the pipeline's ordering mode and bounding read-ahead.
package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/sluicehq/sluice/pipelines"
)

// ErrClosed is returned by Push and Pop once the Scheduler is closed.
var ErrClosed = errors.New("consumer: scheduler closed")

// Ordering is a pipeline's ordering mode (DESIGN §5).
type Ordering int

const (
	// None: any item may run at any time.
	None Ordering = iota
	// Partition: at most one item per lane runs at a time, in push order.
	Partition
	// Key: at most one item per (lane, key) runs at a time, in push order;
	// different keys of a lane run in parallel.
	Key
)

// ParseOrdering parses a pipeline's delivery.ordering value ("none",
// "partition" or "key"). Defaults are the pipelines package's business, so
// "" is an error too.
func ParseOrdering(s string) (Ordering, error) {
	switch s {
	case pipelines.OrderingNone:
		return None, nil
	case pipelines.OrderingPartition:
		return Partition, nil
	case pipelines.OrderingKey:
		return Key, nil
	default:
		return None, fmt.Errorf("consumer: unknown ordering %q (want none, partition or key)", s)
	}
}

func (o Ordering) String() string {
	switch o {
	case None:
		return pipelines.OrderingNone
	case Partition:
		return pipelines.OrderingPartition
	case Key:
		return pipelines.OrderingKey
	default:
		return fmt.Sprintf("Ordering(%d)", int(o))
	}
}

// Ticket is a popped item. Hand it back to Done exactly once when its
// processing has finished (successfully or not); until then its lane (or
// key) stays busy.
type Ticket[T any] struct {
	// Value is the item as pushed.
	Value T
	lane  string
	key   string
	n     *node[T]
	gen   uint64
}

// Lane is the lane the item was pushed with.
func (t Ticket[T]) Lane() string { return t.lane }

// Key is the key the item was pushed with.
func (t Ticket[T]) Key() string { return t.key }

// Scheduler hands items read from a source to workers in an order that
// respects the ordering mode, and bounds how many dispatchable items are
// buffered.
//
// An item is parked while an earlier item of its ordering domain (its lane
// in Partition mode, its (lane, key) in Key mode) is ready or running; it is
// ready when it may run; running between Pop and Done. In Key mode an empty
// key means "no ordering needed": such items are never parked. In None mode
// nothing is ever parked.
//
// Ready items are popped in push order across all lanes, so no lane starves.
// Parked items do not count against credit: the source bounds them per lane
// (its window), and letting the reader pass a busy key is what lets a slow
// or retrying key block only itself.
//
// Every method is safe for concurrent use. Per-domain order is the order in
// which Push calls for that domain returned, so a lane should be pushed from
// one goroutine (the engine's reader). Push, Pop and Done are O(log n) and
// reuse their internal nodes, so the hot path does not allocate per item.
type Scheduler[T any] struct {
	mode Ordering

	mu       sync.Mutex
	credit   int
	closed   bool
	seq      uint64
	ready    readyHeap[T]
	running  int
	parked   int
	domains  map[domainID]*domain[T]
	popWait  []*waiter[T] // FIFO; non-empty only while ready is empty
	pushWait []*waiter[T] // FIFO; pushes waiting for credit

	// Free lists, so that steady-state traffic does not allocate.
	freeNodes   []*node[T]
	freeDomains []*domain[T]
	freeWaiters []*waiter[T]
}

// maxFree bounds each free list.
const maxFree = 1024

type nodeState uint8

const (
	stateParked nodeState = iota + 1
	stateReady
	stateRunning
	stateFree
)

type node[T any] struct {
	v     T
	lane  string
	key   string
	seq   uint64
	gen   uint64 // bumped on recycling, so stale Tickets are detected
	state nodeState
	dom   *domain[T] // nil when the item is not ordered
	next  *node[T]   // next parked item of dom
}

type domainID struct{ lane, key string }

// domain is one ordering domain with its active (ready or running) item and
// the items parked behind it. It exists only while active is set.
type domain[T any] struct {
	id         domainID
	active     *node[T]
	head, tail *node[T]
}

// waiter is a blocked Pop (receives the node handed to it, or nil on close)
// or a blocked Push (receives nil as a wake-up). ch has capacity 1 and gets
// exactly one send per queuing, after the waiter left its queue.
type waiter[T any] struct {
	ch chan *node[T]
}

// NewScheduler returns a Scheduler for mode holding at most credit
// dispatchable items (at least 1).
func NewScheduler[T any](mode Ordering, credit int) *Scheduler[T] {
	return &Scheduler[T]{
		mode:    mode,
		credit:  max(credit, 1),
		domains: make(map[domainID]*domain[T]),
	}
}

// domainID returns the ordering domain of an item, ok=false if the item is
// not ordered.
func (s *Scheduler[T]) domainID(lane, key string) (id domainID, ok bool) {
	switch s.mode {
	case Partition:
		return domainID{lane: lane}, true
	case Key:
		if key == "" {
			return domainID{}, false
		}
		return domainID{lane: lane, key: key}, true
	default:
		return domainID{}, false
	}
}

// Push adds an item read from the source. If the item is dispatchable at
// once (its domain is idle) it blocks while ready+running items number
// credit or more; an item that will be parked never blocks. It returns
// ErrClosed after Close, or ctx.Err() if ctx ends while it waits.
func (s *Scheduler[T]) Push(ctx context.Context, lane, key string, v T) error {
	id, ordered := s.domainID(lane, key)
	s.mu.Lock()
	var dom *domain[T]
	for {
		if s.closed {
			s.mu.Unlock()
			return ErrClosed
		}
		if ordered {
			dom = s.domains[id]
		}
		if dom != nil || s.dispatchableLocked() < s.credit {
			break
		}
		if err := s.waitForCreditLocked(ctx); err != nil {
			s.mu.Unlock()
			return err
		}
	}
	n := s.newNodeLocked(lane, key, v)
	switch {
	case dom != nil:
		n.dom = dom
		n.state = stateParked
		if dom.tail == nil {
			dom.head = n
		} else {
			dom.tail.next = n
		}
		dom.tail = n
		s.parked++
	case ordered:
		dom = s.newDomainLocked(id)
		dom.active = n
		n.dom = dom
		s.makeReadyLocked(n)
	default:
		s.makeReadyLocked(n)
	}
	s.wakePusherLocked()
	s.mu.Unlock()
	return nil
}

// waitForCreditLocked queues a push waiter and blocks until it is woken,
// ctx ends or the scheduler closes. It is entered and left with s.mu held.
func (s *Scheduler[T]) waitForCreditLocked(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	w := s.newWaiterLocked()
	s.pushWait = append(s.pushWait, w)
	s.mu.Unlock()
	select {
	case <-w.ch:
		s.mu.Lock()
		s.freeWaiterLocked(w)
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		if !removeWaiter(&s.pushWait, w) {
			// Woken as we gave up: pass the wake-up on.
			<-w.ch
			s.wakePusherLocked()
		}
		s.freeWaiterLocked(w)
		return ctx.Err()
	}
}

// Pop blocks until an item is ready, marks it running (its domain stays
// busy until Done) and returns it. Ready items come out in push order. It
// returns ErrClosed once the scheduler is closed, even if items remain (see
// Drain), or ctx.Err().
func (s *Scheduler[T]) Pop(ctx context.Context) (Ticket[T], error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Ticket[T]{}, ErrClosed
	}
	if s.ready.len() > 0 {
		n := s.ready.pop()
		n.state = stateRunning
		s.running++
		t := ticketOf(n)
		s.mu.Unlock()
		return t, nil
	}
	if err := ctx.Err(); err != nil {
		s.mu.Unlock()
		return Ticket[T]{}, err
	}
	w := s.newWaiterLocked()
	s.popWait = append(s.popWait, w)
	s.mu.Unlock()

	select {
	case n := <-w.ch:
		s.mu.Lock()
		s.freeWaiterLocked(w)
		if n == nil {
			s.mu.Unlock()
			return Ticket[T]{}, ErrClosed
		}
		t := ticketOf(n) // handed over already marked running
		s.mu.Unlock()
		return t, nil
	case <-ctx.Done():
		s.mu.Lock()
		if !removeWaiter(&s.popWait, w) {
			if n := <-w.ch; n != nil {
				// Handed an item as we gave up: put it back in order.
				s.running--
				s.makeReadyLocked(n)
			}
		}
		s.freeWaiterLocked(w)
		s.mu.Unlock()
		return Ticket[T]{}, ctx.Err()
	}
}

func ticketOf[T any](n *node[T]) Ticket[T] {
	return Ticket[T]{Value: n.v, lane: n.lane, key: n.key, n: n, gen: n.gen}
}

// Done ends a popped item: its domain's next parked item, if any, becomes
// ready. It may be called after Close. Calling it twice for one Ticket, or
// with a zero Ticket, panics: it would release a domain still in use.
func (s *Scheduler[T]) Done(t Ticket[T]) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := t.n
	if n == nil || n.gen != t.gen || n.state != stateRunning {
		panic("consumer: Done called twice or with an unknown ticket")
	}
	s.running--
	if dom := n.dom; dom != nil {
		if next := dom.head; next != nil {
			dom.head = next.next
			if dom.head == nil {
				dom.tail = nil
			}
			next.next = nil
			s.parked--
			dom.active = next
			s.makeReadyLocked(next)
		} else {
			s.freeDomainLocked(dom)
		}
	}
	s.freeNodeLocked(n)
	s.wakePusherLocked()
}

// SetCredit changes the bound on dispatchable items (at least 1). Lowering
// it below the current count removes nothing; pushes wait until the count
// drops.
func (s *Scheduler[T]) SetCredit(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.credit = max(n, 1)
	s.wakePusherLocked()
}

// DropLane removes the lane's items that are ready or parked (not running)
// and returns them in push order, so that the caller can nack them when the
// lane is revoked. Running items stay; their Done works as usual, and new
// pushes for the lane are accepted.
func (s *Scheduler[T]) DropLane(lane string) []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(func(l string) bool { return l == lane })
}

// Close makes Push and Pop return ErrClosed, waking every blocked call.
// Running items may still be passed to Done. It is idempotent.
func (s *Scheduler[T]) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.closed = true
	for _, w := range s.popWait {
		w.ch <- nil
	}
	for _, w := range s.pushWait {
		w.ch <- nil
	}
	s.popWait, s.pushWait = nil, nil
}

// Drain removes and returns every item not yet popped (ready or parked), in
// push order: after Close, everything that was never dispatched, for the
// caller to nack. Running items are not included.
func (s *Scheduler[T]) Drain() []T {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.removeLocked(func(string) bool { return true })
}

// removeLocked removes the ready and parked items of lanes matching drop.
func (s *Scheduler[T]) removeLocked(drop func(lane string) bool) []T {
	var out []*node[T]
	kept := s.ready.items[:0]
	for _, n := range s.ready.items {
		if !drop(n.lane) {
			kept = append(kept, n)
			continue
		}
		out = append(out, n)
		if n.dom != nil {
			n.dom.active = nil
		}
	}
	clear(s.ready.items[len(kept):])
	s.ready.items = kept
	s.ready.init()
	for id, dom := range s.domains {
		if !drop(id.lane) {
			continue
		}
		for n := dom.head; n != nil; n = n.next {
			out = append(out, n)
			s.parked--
		}
		dom.head, dom.tail = nil, nil
		if dom.active == nil {
			s.freeDomainLocked(dom)
		}
	}
	if len(out) == 0 {
		return nil
	}
	slices.SortFunc(out, func(a, b *node[T]) int { return compareSeq(a.seq, b.seq) })
	vals := make([]T, len(out))
	for i, n := range out {
		vals[i] = n.v
		n.next = nil
		s.freeNodeLocked(n)
	}
	s.wakePusherLocked()
	return vals
}

func compareSeq(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	default:
		return 0
	}
}

// Ready is the number of items waiting for a worker.
func (s *Scheduler[T]) Ready() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready.len()
}

// Running is the number of popped items not yet Done.
func (s *Scheduler[T]) Running() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.running
}

// Parked is the number of items waiting behind a busy lane or key.
func (s *Scheduler[T]) Parked() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.parked
}

// Credit is the current bound on dispatchable items.
func (s *Scheduler[T]) Credit() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.credit
}

func (s *Scheduler[T]) dispatchableLocked() int { return s.ready.len() + s.running }

// makeReadyLocked hands n to the longest-waiting Pop, or queues it. A waiter
// exists only while no item is ready, so handing over keeps push order.
func (s *Scheduler[T]) makeReadyLocked(n *node[T]) {
	if len(s.popWait) > 0 {
		w := s.popWait[0]
		s.popWait[0] = nil
		s.popWait = s.popWait[1:]
		n.state = stateRunning
		s.running++
		w.ch <- n
		return
	}
	n.state = stateReady
	s.ready.push(n)
}

// wakePusherLocked wakes the longest-waiting Push if there is room; it
// re-checks, and wakes the next one in turn after pushing.
func (s *Scheduler[T]) wakePusherLocked() {
	if len(s.pushWait) == 0 || s.dispatchableLocked() >= s.credit {
		return
	}
	w := s.pushWait[0]
	s.pushWait[0] = nil
	s.pushWait = s.pushWait[1:]
	w.ch <- nil
}

func removeWaiter[T any](queue *[]*waiter[T], w *waiter[T]) bool {
	for i, x := range *queue {
		if x == w {
			*queue = slices.Delete(*queue, i, i+1)
			return true
		}
	}
	return false
}

func (s *Scheduler[T]) newNodeLocked(lane, key string, v T) *node[T] {
	var n *node[T]
	if k := len(s.freeNodes); k > 0 {
		n = s.freeNodes[k-1]
		s.freeNodes[k-1] = nil
		s.freeNodes = s.freeNodes[:k-1]
	} else {
		n = &node[T]{}
	}
	s.seq++
	n.v, n.lane, n.key, n.seq = v, lane, key, s.seq
	return n
}

func (s *Scheduler[T]) freeNodeLocked(n *node[T]) {
	var zero T
	n.v, n.lane, n.key, n.dom, n.next = zero, "", "", nil, nil
	n.state = stateFree
	n.gen++
	if len(s.freeNodes) < maxFree {
		s.freeNodes = append(s.freeNodes, n)
	}
}

func (s *Scheduler[T]) newDomainLocked(id domainID) *domain[T] {
	var d *domain[T]
	if k := len(s.freeDomains); k > 0 {
		d = s.freeDomains[k-1]
		s.freeDomains[k-1] = nil
		s.freeDomains = s.freeDomains[:k-1]
	} else {
		d = &domain[T]{}
	}
	d.id = id
	s.domains[id] = d
	return d
}

// freeDomainLocked forgets an idle domain, so that memory does not grow
// with the number of distinct keys.
func (s *Scheduler[T]) freeDomainLocked(d *domain[T]) {
	delete(s.domains, d.id)
	*d = domain[T]{}
	if len(s.freeDomains) < maxFree {
		s.freeDomains = append(s.freeDomains, d)
	}
}

func (s *Scheduler[T]) newWaiterLocked() *waiter[T] {
	if k := len(s.freeWaiters); k > 0 {
		w := s.freeWaiters[k-1]
		s.freeWaiters[k-1] = nil
		s.freeWaiters = s.freeWaiters[:k-1]
		return w
	}
	return &waiter[T]{ch: make(chan *node[T], 1)}
}

// freeWaiterLocked recycles a waiter that is out of every queue and whose
// channel is empty.
func (s *Scheduler[T]) freeWaiterLocked(w *waiter[T]) {
	if len(s.freeWaiters) < maxFree {
		s.freeWaiters = append(s.freeWaiters, w)
	}
}

// readyHeap is a min-heap of ready nodes by push sequence.
type readyHeap[T any] struct {
	items []*node[T]
}

func (h *readyHeap[T]) len() int { return len(h.items) }

func (h *readyHeap[T]) push(n *node[T]) {
	h.items = append(h.items, n)
	h.up(len(h.items) - 1)
}

func (h *readyHeap[T]) pop() *node[T] {
	last := len(h.items) - 1
	top := h.items[0]
	h.items[0] = h.items[last]
	h.items[last] = nil
	h.items = h.items[:last]
	if last > 0 {
		h.down(0)
	}
	return top
}

func (h *readyHeap[T]) init() {
	for i := len(h.items)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

func (h *readyHeap[T]) up(i int) {
	for i > 0 {
		parent := (i - 1) / 2
		if h.items[parent].seq <= h.items[i].seq {
			return
		}
		h.items[parent], h.items[i] = h.items[i], h.items[parent]
		i = parent
	}
}

func (h *readyHeap[T]) down(i int) {
	n := len(h.items)
	for {
		smallest := i
		if l := 2*i + 1; l < n && h.items[l].seq < h.items[smallest].seq {
			smallest = l
		}
		if r := 2*i + 2; r < n && h.items[r].seq < h.items[smallest].seq {
			smallest = r
		}
		if smallest == i {
			return
		}
		h.items[i], h.items[smallest] = h.items[smallest], h.items[i]
		i = smallest
	}
}
