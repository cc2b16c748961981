package queue

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"
)

// appendN appends messages "prefix-0".. with their index as data and
// returns their stored times (read back by Range over everything).
func appendN(t *testing.T, a *Archive, prefix string, n int) {
	t.Helper()
	for i := range n {
		id := prefix + "-" + strconv.Itoa(i)
		if _, err := a.Append(testCtx(t), id, []byte(id), map[string]string{"k": id}); err != nil {
			t.Fatalf("Append(%s): %v", id, err)
		}
	}
}

func rangeIDs(t *testing.T, a *Archive, from, to time.Time) ([]string, []time.Time) {
	t.Helper()
	var ids []string
	var times []time.Time
	err := a.Range(testCtx(t), from, to, func(s *Stored) error {
		if s.Headers["k"] != string(s.Data) || s.MsgID != string(s.Data) {
			t.Errorf("message %d: headers %v, msgID %q, data %q", s.Seq, s.Headers, s.MsgID, s.Data)
		}
		ids = append(ids, string(s.Data))
		times = append(times, s.Time)
		return nil
	})
	if err != nil {
		t.Fatalf("Range: %v", err)
	}
	return ids, times
}

func TestArchiveRangeSelectsTheTimeWindow(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	a, err := q.OpenArchive(testCtx(t), "bus.acme.orders", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := rangeIDs(t, a, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)); len(ids) != 0 {
		t.Fatalf("empty archive ranged %v", ids)
	}
	appendN(t, a, "before", 3)
	time.Sleep(20 * time.Millisecond) // distinct stored times around the window's edges
	appendN(t, a, "inside", 4)
	time.Sleep(20 * time.Millisecond)
	appendN(t, a, "after", 2)

	all, times := rangeIDs(t, a, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if len(all) != 9 {
		t.Fatalf("whole archive: %v", all)
	}
	// The window [first inside, first after) by the stored times.
	from, to := times[3], times[7]
	got, _ := rangeIDs(t, a, from, to)
	want := []string{"inside-0", "inside-1", "inside-2", "inside-3"}
	if !slices.Equal(got, want) {
		t.Fatalf("window: got %v, want %v", got, want)
	}
	if got, _ := rangeIDs(t, a, to, from); len(got) != 0 {
		t.Fatalf("inverted window ranged %v", got)
	}
	if got, _ := rangeIDs(t, a, time.Now().Add(time.Minute), time.Now().Add(time.Hour)); len(got) != 0 {
		t.Fatalf("future window ranged %v", got)
	}
	// Reading removes nothing.
	if again, _ := rangeIDs(t, a, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)); !slices.Equal(again, all) {
		t.Fatalf("second read: %v, want %v", again, all)
	}
}

func TestArchiveDedupsAndStopsOnCallbackError(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	a, err := q.OpenArchive(testCtx(t), "arch", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, a, "m", 3)
	r, err := a.Append(testCtx(t), "m-1", []byte("m-1"), map[string]string{"k": "m-1"})
	if err != nil || !r.Duplicate {
		t.Fatalf("repeated msgID: %+v, %v; want a duplicate", r, err)
	}
	stop := errors.New("stop")
	n := 0
	err = a.Range(testCtx(t), time.Now().Add(-time.Hour), time.Now().Add(time.Hour), func(*Stored) error {
		n++
		return stop
	})
	if !errors.Is(err, stop) || n != 1 {
		t.Fatalf("Range: %v after %d calls; want the callback's error after 1", err, n)
	}
}

func TestArchiveSurvivesRestartAndKeepsQueuesApart(t *testing.T) {
	dir := t.TempDir()
	q, err := OpenEmbedded(testCtx(t), EmbeddedConfig{DataDir: dir}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := q.OpenArchive(testCtx(t), "keep", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, a, "k", 5)
	// A queue next to the archive sees none of its messages.
	createQueue(t, q, "keep")
	if n := depth(t, q, "keep"); n != 0 {
		t.Fatalf("queue of the same name holds %d messages", n)
	}
	closeQueue(t, q)

	q2 := openEmbedded(t, EmbeddedConfig{DataDir: dir})
	a2, err := q2.OpenArchive(testCtx(t), "keep", 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if ids, _ := rangeIDs(t, a2, time.Now().Add(-time.Hour), time.Now().Add(time.Hour)); len(ids) != 5 {
		t.Fatalf("after restart: %v", ids)
	}
}

func TestArchiveRefusesBadArguments(t *testing.T) {
	q := openEmbedded(t, EmbeddedConfig{})
	for _, c := range []struct {
		name      string
		retention time.Duration
	}{{"bad name!", time.Hour}, {"ok", 0}, {"ok", -time.Second}} {
		if _, err := q.OpenArchive(testCtx(t), c.name, c.retention); err == nil {
			t.Errorf("OpenArchive(%q, %s) succeeded", c.name, c.retention)
		}
	}
	a, err := q.OpenArchive(testCtx(t), "closing", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	closeQueue(t, q)
	if _, err := a.Append(context.Background(), "", []byte("x"), nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v, want ErrClosed", err)
	}
}
