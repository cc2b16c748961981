package consumer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestParseOrdering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      string
		want    Ordering
		wantErr bool
	}{
		{"none", None, false},
		{"partition", Partition, false},
		{"key", Key, false},
		{"", None, true},
		{"Key", None, true},
		{"keys", None, true},
	}
	for _, tt := range tests {
		got, err := ParseOrdering(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseOrdering(%q) = %v, %v", tt.in, got, err)
		}
		if err == nil && got.String() != tt.in {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), tt.in)
		}
	}
	if s := Ordering(7).String(); s != "Ordering(7)" {
		t.Errorf("String = %q", s)
	}
}

// item is a test payload.
type item struct {
	lane, key string
	id        int
}

func (i item) String() string { return fmt.Sprintf("%s/%s#%d", i.lane, i.key, i.id) }

func push(t *testing.T, s *Scheduler[item], lane, key string, id int) {
	t.Helper()
	if err := s.Push(context.Background(), lane, key, item{lane, key, id}); err != nil {
		t.Fatalf("Push(%s/%s#%d): %v", lane, key, id, err)
	}
}

// tryPop pops only if an item is ready now (Pop takes a ready item even
// with a done ctx and never blocks then).
func tryPop(s *Scheduler[item]) (Ticket[item], bool) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	tk, err := s.Pop(ctx)
	return tk, err == nil
}

func popIDs(t *testing.T, s *Scheduler[item]) ([]int, []Ticket[item]) {
	t.Helper()
	var ids []int
	var tickets []Ticket[item]
	for {
		tk, ok := tryPop(s)
		if !ok {
			return ids, tickets
		}
		ids = append(ids, tk.Value.id)
		tickets = append(tickets, tk)
	}
}

func ids(items []item) []int {
	out := make([]int, len(items))
	for i, it := range items {
		out[i] = it.id
	}
	return out
}

func TestModes(t *testing.T) {
	t.Parallel()
	type pushed struct {
		lane, key string
	}
	input := []pushed{
		{"p0", "a"}, // 1
		{"p0", "a"}, // 2
		{"p0", "b"}, // 3
		{"p1", "a"}, // 4
		{"p0", ""},  // 5
		{"p0", ""},  // 6
		{"p1", "a"}, // 7
	}
	tests := []struct {
		mode Ordering
		// waves[i] is what becomes poppable after Done of everything popped
		// in wave i-1.
		waves [][]int
	}{
		{None, [][]int{{1, 2, 3, 4, 5, 6, 7}}},
		{Partition, [][]int{{1, 4}, {2, 7}, {3}, {5}, {6}}},
		{Key, [][]int{{1, 3, 4, 5, 6}, {2, 7}}},
	}
	for _, tt := range tests {
		t.Run(tt.mode.String(), func(t *testing.T) {
			t.Parallel()
			s := NewScheduler[item](tt.mode, 100)
			for i, p := range input {
				push(t, s, p.lane, p.key, i+1)
			}
			for w, want := range tt.waves {
				got, tickets := popIDs(t, s)
				if !slices.Equal(got, want) {
					t.Fatalf("wave %d popped %v, want %v", w, got, want)
				}
				for _, tk := range tickets {
					s.Done(tk)
				}
			}
			if s.Ready()+s.Running()+s.Parked() != 0 || len(s.domains) != 0 {
				t.Fatalf("left ready=%d running=%d parked=%d domains=%d", s.Ready(), s.Running(), s.Parked(), len(s.domains))
			}
		})
	}
}

func TestPopOrderIsPushOrderAcrossLanes(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](Partition, 100)
	push(t, s, "a", "", 1)
	push(t, s, "a", "", 2)
	push(t, s, "b", "", 3)
	push(t, s, "b", "", 4)
	got, tickets := popIDs(t, s) // 1, 3
	if !slices.Equal(got, []int{1, 3}) {
		t.Fatalf("popped %v", got)
	}
	// b's successor becomes ready first, but a's was pushed earlier.
	s.Done(tickets[1])
	s.Done(tickets[0])
	got, _ = popIDs(t, s)
	if !slices.Equal(got, []int{2, 4}) {
		t.Fatalf("popped %v, want [2 4]", got)
	}
}

func TestTicketLaneAndKey(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](Key, 10)
	push(t, s, "orders/3", "cust-7", 1)
	tk, ok := tryPop(s)
	if !ok || tk.Lane() != "orders/3" || tk.Key() != "cust-7" || tk.Value.id != 1 {
		t.Fatalf("ticket %+v lane %q key %q", tk.Value, tk.Lane(), tk.Key())
	}
	s.Done(tk)
}

// waitFor polls cond; the deadline only prevents a hang.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *Scheduler[T]) pushWaiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.pushWait)
}

func (s *Scheduler[T]) popWaiting() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.popWait)
}

func TestCreditBlocksOnlyDispatchable(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](Key, 2)
	push(t, s, "l", "a", 1)
	push(t, s, "l", "b", 2)
	// Parked items never wait for credit.
	push(t, s, "l", "a", 3)
	push(t, s, "l", "b", 4)
	if s.Parked() != 2 || s.Ready() != 2 {
		t.Fatalf("parked %d ready %d", s.Parked(), s.Ready())
	}
	// A dispatchable item waits; with a done ctx it fails at once.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Push(ctx, "l", "c", item{"l", "c", 5}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Push over credit = %v", err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Push(context.Background(), "l", "c", item{"l", "c", 5}) }()
	waitFor(t, "push to wait", func() bool { return s.pushWaiting() == 1 })

	// Popping does not free credit (running counts); Done of an item with a
	// parked successor does not either (the successor becomes ready).
	a, _ := tryPop(s)
	s.Done(a)
	if s.pushWaiting() != 1 {
		t.Fatal("push proceeded without free credit")
	}
	b, _ := tryPop(s)  // id 2
	a2, _ := tryPop(s) // id 3
	s.Done(a2)         // key a now idle: one slot free
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if d := s.Ready() + s.Running(); d != 2 {
		t.Fatalf("dispatchable %d, want 2", d)
	}
	s.Done(b)
	got, tickets := popIDs(t, s)
	if !slices.Equal(got, []int{4, 5}) {
		t.Fatalf("popped %v", got)
	}
	for _, tk := range tickets {
		s.Done(tk)
	}
}

func TestSetCreditWakesPushers(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](None, 1)
	push(t, s, "l", "", 1)
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			if err := s.Push(context.Background(), "l", "", item{"l", "", 10 + i}); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, "pushes to wait", func() bool { return s.pushWaiting() == 3 })
	s.SetCredit(3)
	waitFor(t, "two pushes to proceed", func() bool { return s.Ready() == 3 })
	if s.pushWaiting() != 1 {
		t.Fatalf("%d pushes waiting, want 1", s.pushWaiting())
	}
	s.SetCredit(0) // clamped to 1
	if s.Credit() != 1 {
		t.Fatalf("credit %d", s.Credit())
	}
	s.SetCredit(10)
	wg.Wait()
	if s.Ready() != 4 {
		t.Fatalf("ready %d", s.Ready())
	}
}

func TestDropLane(t *testing.T) {
	t.Parallel()
	for _, mode := range []Ordering{None, Partition, Key} {
		t.Run(mode.String(), func(t *testing.T) {
			t.Parallel()
			s := NewScheduler[item](mode, 100)
			keys := []string{"a", "b", "a", "", "b", "a"}
			for i, k := range keys {
				push(t, s, "x", k, i+1)
				push(t, s, "y", k, 100+i+1)
			}
			running, ok := tryPop(s) // x#1
			if !ok || running.Value.id != 1 {
				t.Fatalf("popped %v", running.Value)
			}
			dropped := s.DropLane("x")
			if want := []int{2, 3, 4, 5, 6}; !slices.Equal(ids(dropped), want) {
				t.Fatalf("dropped %v, want %v", ids(dropped), want)
			}
			if s.DropLane("x") != nil {
				t.Fatal("second drop returned items")
			}
			// The running item finishes normally; the lane accepts new items.
			s.Done(running)
			push(t, s, "x", "a", 7)
			var got []int
			for s.Ready()+s.Parked()+s.Running() > 0 {
				ids, tickets := popIDs(t, s)
				got = append(got, ids...)
				for _, tk := range tickets {
					s.Done(tk)
				}
			}
			slices.Sort(got)
			if want := []int{7, 101, 102, 103, 104, 105, 106}; !slices.Equal(got, want) {
				t.Fatalf("processed %v, want %v", got, want)
			}
			if len(s.domains) != 0 {
				t.Fatalf("%d domains left", len(s.domains))
			}
		})
	}
}

func TestCloseAndDrain(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](Partition, 2)
	push(t, s, "a", "", 1)
	push(t, s, "a", "", 2)
	push(t, s, "b", "", 3)
	running, _ := tryPop(s) // a#1

	// Blocked Push (credit full: a#1 running, b#3 ready) and blocked Pops
	// (after taking b#3 nothing is ready) are woken by Close.
	errs := make(chan error, 3)
	go func() { errs <- s.Push(context.Background(), "c", "", item{"c", "", 4}) }()
	waitFor(t, "push to wait", func() bool { return s.pushWaiting() == 1 })
	b, _ := tryPop(s)
	for range 2 {
		go func() {
			_, err := s.Pop(context.Background())
			errs <- err
		}()
	}
	waitFor(t, "pops to wait", func() bool { return s.popWaiting() == 2 })
	s.Close()
	s.Close() // idempotent
	for range 3 {
		if err := <-errs; !errors.Is(err, ErrClosed) {
			t.Fatalf("woken with %v, want ErrClosed", err)
		}
	}
	if err := s.Push(context.Background(), "a", "", item{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Push after Close = %v", err)
	}
	if _, err := s.Pop(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Pop after Close = %v", err)
	}
	// Drain returns what was never dispatched, including a#2 parked behind
	// the still running a#1; Done works after Close.
	if got := ids(s.Drain()); !slices.Equal(got, []int{2}) {
		t.Fatalf("drained %v, want [2]", got)
	}
	s.Done(b)
	s.Done(running)
	if got := s.Drain(); got != nil {
		t.Fatalf("second drain returned %v", got)
	}
	if s.Ready()+s.Running()+s.Parked() != 0 || len(s.domains) != 0 {
		t.Fatal("state left after drain")
	}
}

func TestDrainReturnsReadyAndParkedInPushOrder(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](Key, 10)
	for i, k := range []string{"a", "a", "b", "a", "c", "b"} {
		push(t, s, "l", k, i+1)
	}
	running, _ := tryPop(s) // 1
	s.Close()
	if got := ids(s.Drain()); !slices.Equal(got, []int{2, 3, 4, 5, 6}) {
		t.Fatalf("drained %v", got)
	}
	s.Done(running)
	if len(s.domains) != 0 || s.Running() != 0 {
		t.Fatal("state left")
	}
}

func TestPopHonoursContext(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](None, 10)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Pop(ctx)
		errc <- err
	}()
	waitFor(t, "pop to wait", func() bool { return s.popWaiting() == 1 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if s.popWaiting() != 0 {
		t.Fatal("cancelled waiter still queued")
	}
	// An item pushed later is not lost to the departed waiter.
	push(t, s, "l", "", 1)
	tk, ok := tryPop(s)
	if !ok || tk.Value.id != 1 {
		t.Fatal("item lost")
	}
	s.Done(tk)
}

// TestPopCancelRace pushes items while poppers give up at random, so that
// some are handed an item just as they leave: it must go back, in order.
func TestPopCancelRace(t *testing.T) {
	t.Parallel()
	const n = 3000
	s := NewScheduler[item](Partition, 4)
	var wg sync.WaitGroup
	var mu sync.Mutex
	seen := make(map[int]bool)
	next := 0 // one lane: items must come out in order
	done := make(chan struct{})
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				ctx, cancel := context.WithCancel(context.Background())
				if (i+w)%3 == 0 {
					go cancel()
				}
				tk, err := s.Pop(ctx)
				cancel()
				if errors.Is(err, ErrClosed) {
					return
				}
				if err != nil {
					continue
				}
				mu.Lock()
				if seen[tk.Value.id] || tk.Value.id != next {
					t.Errorf("popped %d, want %d (seen before: %v)", tk.Value.id, next, seen[tk.Value.id])
				}
				seen[tk.Value.id] = true
				next++
				last := next == n
				mu.Unlock()
				s.Done(tk)
				if last {
					close(done)
				}
			}
		})
	}
	for i := range n {
		push(t, s, "one", "", i)
	}
	<-done
	s.Close()
	wg.Wait()
	if len(seen) != n {
		t.Fatalf("processed %d of %d", len(seen), n)
	}
}

func TestDoneMisusePanics(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](Key, 10)
	push(t, s, "l", "k", 1)
	tk, _ := tryPop(s)
	s.Done(tk)
	push(t, s, "l", "k", 2) // reuses the node: the stale ticket must not match
	for name, bad := range map[string]Ticket[item]{"twice": tk, "zero": {}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Done %s did not panic", name)
				}
			}()
			s.Done(bad)
		}()
	}
	if s.Ready() != 1 {
		t.Fatalf("misuse changed state: ready %d", s.Ready())
	}
}

func TestDomainsDoNotAccumulate(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](Key, 64)
	for i := range 10000 {
		push(t, s, fmt.Sprintf("l%d", i%4), fmt.Sprintf("k%d", i), i)
		if i%32 == 31 {
			_, tickets := popIDs(t, s)
			for _, tk := range tickets {
				s.Done(tk)
			}
		}
	}
	_, tickets := popIDs(t, s)
	for _, tk := range tickets {
		s.Done(tk)
	}
	if len(s.domains) != 0 {
		t.Fatalf("%d domains kept for finished keys", len(s.domains))
	}
	if len(s.freeDomains) > maxFree || len(s.freeNodes) > maxFree {
		t.Fatal("free lists over their bound")
	}
}

func TestHotPathDoesNotAllocate(t *testing.T) {
	for _, mode := range []Ordering{None, Partition, Key} {
		t.Run(mode.String(), func(t *testing.T) {
			s := NewScheduler[item](mode, 1024)
			ctx := context.Background()
			keys := make([]string, 64)
			for i := range keys {
				keys[i] = fmt.Sprintf("k%d", i)
			}
			cycle := func() {
				for i, k := range keys {
					if err := s.Push(ctx, keys[i%8], k, item{id: i}); err != nil {
						t.Fatal(err)
					}
				}
				for s.Ready() > 0 {
					tk, err := s.Pop(ctx)
					if err != nil {
						t.Fatal(err)
					}
					s.Done(tk)
				}
			}
			cycle() // warm the free lists, heap and map
			if allocs := testing.AllocsPerRun(50, cycle); allocs > 0 {
				t.Fatalf("%v allocations per %d items", allocs, len(keys))
			}
		})
	}
}

func TestPushHonoursContextWhileWaiting(t *testing.T) {
	t.Parallel()
	s := NewScheduler[item](None, 1)
	push(t, s, "l", "", 1)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() { errs <- s.Push(ctx, "l", "", item{"l", "", 2}) }()
	waitFor(t, "push to wait", func() bool { return s.pushWaiting() == 1 })
	other := make(chan error, 1)
	go func() { other <- s.Push(context.Background(), "l", "", item{"l", "", 3}) }()
	waitFor(t, "second push to wait", func() bool { return s.pushWaiting() == 2 })
	cancel()
	if err := <-errs; !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	// The remaining waiter gets the credit freed next.
	tk, _ := tryPop(s)
	s.Done(tk)
	if err := <-other; err != nil {
		t.Fatal(err)
	}
	got, tickets := popIDs(t, s)
	if !slices.Equal(got, []int{3}) {
		t.Fatalf("popped %v, want [3]", got)
	}
	s.Done(tickets[0])
}
