package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"
)

// invariants checks the scheduler's internal consistency under its lock.
// credit is the bound dispatchable items must respect (0: not checked).
func (s *Scheduler[T]) invariants(credit int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d := s.dispatchableLocked(); credit > 0 && d > credit {
		return fmt.Errorf("dispatchable %d > credit %d", d, credit)
	}
	if len(s.popWait) > 0 && s.ready.len() > 0 {
		return fmt.Errorf("%d pops wait while %d items are ready", len(s.popWait), s.ready.len())
	}
	for i, n := range s.ready.items {
		if n.state != stateReady {
			return fmt.Errorf("ready item in state %d", n.state)
		}
		if i > 0 && s.ready.items[(i-1)/2].seq > n.seq {
			return errors.New("ready heap out of order")
		}
	}
	parked := 0
	for id, d := range s.domains {
		if d.id != id || d.active == nil || d.active.dom != d {
			return fmt.Errorf("domain %v inconsistent", id)
		}
		if st := d.active.state; st != stateReady && st != stateRunning {
			return fmt.Errorf("domain %v active item in state %d", id, st)
		}
		var last *node[T]
		for n := d.head; n != nil; n = n.next {
			if n.state != stateParked || n.dom != d || n.seq <= d.active.seq {
				return fmt.Errorf("domain %v parked item inconsistent", id)
			}
			parked++
			last = n
		}
		if last != d.tail {
			return fmt.Errorf("domain %v tail inconsistent", id)
		}
	}
	if parked != s.parked {
		return fmt.Errorf("parked %d, counted %d", s.parked, parked)
	}
	return nil
}

// queuedInLane counts the lane's ready and parked items.
func (s *Scheduler[T]) queuedInLane(lane string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, it := range s.ready.items {
		if it.lane == lane {
			n++
		}
	}
	for id, d := range s.domains {
		if id.lane != lane {
			continue
		}
		for it := d.head; it != nil; it = it.next {
			n++
		}
	}
	return n
}

type propItem struct {
	id     int
	lane   string
	key    string
	domain string // "" when unordered
	idx    int    // position in the domain's push order
}

const (
	statePushed = iota + 1
	statePopped
	stateDone
	stateDropped
	stateDrained
)

// propLedger records what happened to every item and checks the ordering
// properties as items are popped.
type propLedger struct {
	t *testing.T

	mu       sync.Mutex
	items    []propItem
	state    []int
	running  map[string]int // running items per domain (lane for the concurrency check)
	lastIdx  map[string]int // last popped idx per domain
	dropped  map[string]map[int]bool
	nextIdx  map[string]int // next idx to assign per domain
	failures int
}

func (l *propLedger) fail(format string, args ...any) {
	l.failures++
	if l.failures <= 10 {
		l.t.Errorf(format, args...)
	}
}

func (l *propLedger) newItem(mode Ordering, lane, key string) propItem {
	l.mu.Lock()
	defer l.mu.Unlock()
	it := propItem{id: len(l.items), lane: lane, key: key}
	switch {
	case mode == Partition:
		it.domain = lane
	case mode == Key && key != "":
		it.domain = lane + "\x00" + key
	}
	if it.domain != "" {
		it.idx = l.nextIdx[it.domain]
		l.nextIdx[it.domain]++
	}
	l.items = append(l.items, it)
	l.state = append(l.state, statePushed)
	return it
}

func (l *propLedger) popped(it propItem) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.state[it.id] != statePushed {
		l.fail("item %d popped in state %d", it.id, l.state[it.id])
	}
	l.state[it.id] = statePopped
	if it.domain == "" {
		return
	}
	if l.running[it.domain] != 0 {
		l.fail("domain %q: item %d popped while another runs", it.domain, it.idx)
	}
	l.running[it.domain]++
	last, ok := l.lastIdx[it.domain]
	if !ok {
		last = -1
	}
	if it.idx <= last {
		l.fail("domain %q: item %d popped after %d", it.domain, it.idx, last)
	}
	for skipped := last + 1; skipped < it.idx; skipped++ {
		if !l.dropped[it.domain][skipped] {
			l.fail("domain %q: item %d popped before %d, which was not dropped", it.domain, it.idx, skipped)
		}
	}
	l.lastIdx[it.domain] = it.idx
}

func (l *propLedger) done(it propItem) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.state[it.id] = stateDone
	if it.domain != "" {
		l.running[it.domain]--
	}
}

// droppedLane records a DropLane result and checks it: in every ordered
// domain of the lane the newly dropped items are a contiguous suffix of what
// was pushed (skipping items dropped earlier), and of the items before it
// that were not dropped, all but the last (which may still be running,
// popped but not yet recorded) have been popped.
func (l *propLedger) droppedLane(lane string, got []propItem) {
	l.mu.Lock()
	defer l.mu.Unlock()
	byDomain := map[string][]int{}
	for i, it := range got {
		if it.lane != lane {
			l.fail("DropLane(%s) returned an item of %s", lane, it.lane)
		}
		if i > 0 && got[i-1].id >= it.id {
			l.fail("DropLane(%s) not in push order", lane)
		}
		if l.state[it.id] != statePushed {
			l.fail("item %d dropped in state %d", it.id, l.state[it.id])
		}
		if it.domain != "" {
			byDomain[it.domain] = append(byDomain[it.domain], it.idx)
		}
	}
	// Items of the lane by domain, in push order, before this drop.
	domains := map[string][]propItem{}
	for _, it := range l.items {
		if it.lane == lane && it.domain != "" && l.state[it.id] != stateDropped {
			domains[it.domain] = append(domains[it.domain], it)
		}
	}
	for domain, items := range domains {
		idxs := byDomain[domain]
		suffix := items[len(items)-len(idxs):]
		for i, it := range suffix {
			if it.idx != idxs[i] {
				l.fail("domain %q: dropped %v, not the undropped suffix", domain, idxs)
				break
			}
		}
		before := items[:len(items)-len(idxs)]
		for i, it := range before {
			st := l.state[it.id]
			if i < len(before)-1 && st != statePopped && st != stateDone {
				l.fail("domain %q: item %d (state %d) neither popped nor dropped", domain, it.idx, st)
			}
		}
	}
	for _, it := range got {
		l.state[it.id] = stateDropped
		if it.domain != "" {
			if l.dropped[it.domain] == nil {
				l.dropped[it.domain] = map[int]bool{}
			}
			l.dropped[it.domain][it.idx] = true
		}
	}
}

func (l *propLedger) drained(got []propItem) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, it := range got {
		if l.state[it.id] != statePushed {
			l.fail("item %d drained in state %d", it.id, l.state[it.id])
		}
		l.state[it.id] = stateDrained
	}
}

func TestPropertyConcurrent(t *testing.T) {
	t.Parallel()
	for _, mode := range []Ordering{None, Partition, Key} {
		for _, drops := range []bool{false, true} {
			t.Run(fmt.Sprintf("%v/drops=%v", mode, drops), func(t *testing.T) {
				t.Parallel()
				for seed := range uint64(3) {
					runProperty(t, mode, drops, seed)
				}
			})
		}
	}
}

func runProperty(t *testing.T, mode Ordering, drops bool, seed uint64) {
	const (
		lanes      = 12
		keysPer    = 5
		pushers    = 3
		workers    = 8
		perPusher  = 1500
		credit     = 12
		laneWindow = 24 // the source's per-lane bound on unacked items
	)
	s := NewScheduler[propItem](mode, credit)
	l := &propLedger{
		t:       t,
		running: map[string]int{}, lastIdx: map[string]int{},
		dropped: map[string]map[int]bool{}, nextIdx: map[string]int{},
	}
	// window[lane] models the source's per-lane read-ahead: a token per
	// unfinished item.
	window := make([]chan struct{}, lanes)
	for i := range window {
		window[i] = make(chan struct{}, laneWindow)
	}
	laneNum := func(lane string) int {
		var n int
		fmt.Sscanf(lane, "lane%d", &n)
		return n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var workersWG sync.WaitGroup
	for w := range workers {
		workersWG.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(100+w)))
			for {
				tk, err := s.Pop(ctx)
				if err != nil {
					if !errors.Is(err, ErrClosed) {
						t.Errorf("Pop: %v", err)
					}
					return
				}
				batch := []Ticket[propItem]{tk}
				// Sometimes hold several tickets and finish them in random
				// order.
				for rng.IntN(3) == 0 && len(batch) < 3 {
					more, ok := tryPopT(s)
					if !ok {
						break
					}
					batch = append(batch, more)
				}
				for _, tk := range batch {
					l.popped(tk.Value)
				}
				if err := s.invariants(credit); err != nil {
					t.Error(err)
				}
				if rng.IntN(4) == 0 {
					time.Sleep(time.Duration(rng.IntN(50)) * time.Microsecond)
				}
				rng.Shuffle(len(batch), func(i, j int) { batch[i], batch[j] = batch[j], batch[i] })
				for _, tk := range batch {
					l.done(tk.Value)
					s.Done(tk)
					<-window[laneNum(tk.Value.lane)]
				}
			}
		})
	}

	var pushersWG sync.WaitGroup
	for p := range pushers {
		pushersWG.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(p)))
			var own []string
			for i := p; i < lanes; i += pushers {
				own = append(own, fmt.Sprintf("lane%d", i))
			}
			for range perPusher {
				lane := own[rng.IntN(len(own))]
				if drops && rng.IntN(200) == 0 {
					got := s.DropLane(lane)
					l.droppedLane(lane, got)
					// Only this goroutine pushes the lane and none of its
					// items is parked any more, so nothing can have
					// refilled it.
					if n := s.queuedInLane(lane); n != 0 {
						t.Errorf("DropLane(%s) left %d items queued", lane, n)
					}
					for range got {
						<-window[laneNum(lane)]
					}
				}
				key := fmt.Sprintf("k%d", rng.IntN(keysPer))
				if rng.IntN(5) == 0 {
					key = ""
				}
				select {
				case window[laneNum(lane)] <- struct{}{}:
				case <-ctx.Done():
					t.Error("window wait timed out")
					return
				}
				it := l.newItem(mode, lane, key)
				if err := s.Push(ctx, lane, key, it); err != nil {
					t.Errorf("Push: %v", err)
					return
				}
				if err := s.invariants(credit); err != nil {
					t.Error(err)
				}
			}
		})
	}
	pushersWG.Wait()
	// Let the workers make some progress, then close with work pending.
	waitFor(t, "some progress", func() bool {
		l.mu.Lock()
		defer l.mu.Unlock()
		for _, st := range l.state {
			if st == stateDone {
				return true
			}
		}
		return false
	})
	s.Close()
	workersWG.Wait()
	l.drained(s.Drain())
	if err := s.invariants(credit); err != nil {
		t.Error(err)
	}
	if s.Running() != 0 || s.Ready() != 0 || s.Parked() != 0 || len(s.domains) != 0 {
		t.Errorf("left running=%d ready=%d parked=%d domains=%d", s.Running(), s.Ready(), s.Parked(), len(s.domains))
	}
	counts := map[int]int{}
	for id, st := range l.state {
		counts[st]++
		if st == statePushed || st == statePopped {
			t.Errorf("item %d lost in state %d", id, st)
			break
		}
	}
	if !drops && counts[stateDropped] != 0 {
		t.Errorf("%d dropped without DropLane", counts[stateDropped])
	}
	t.Logf("seed %d: %d items: done %d, dropped %d, drained %d",
		seed, len(l.state), counts[stateDone], counts[stateDropped], counts[stateDrained])
}

func tryPopT[T any](s *Scheduler[T]) (Ticket[T], bool) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tk, err := s.Pop(ctx)
	return tk, err == nil
}
