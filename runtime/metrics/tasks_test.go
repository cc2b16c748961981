package metrics

import "testing"

func TestTasksRecorder(t *testing.T) {
	r := New("v1")
	a, b := r.Tasks(), r.Tasks() // the second shares the first's collectors
	a.Submitted("acme", "resize", SubmissionAccepted, "")
	b.Submitted("acme", "resize", SubmissionAccepted, "")
	b.Submitted("", "", SubmissionRejected, "unauthenticated")
	a.SetStates("acme", []string{"queued", "running"}, map[string]int{"queued": 3})
	a.SetStates("acme", []string{"queued", "running"}, map[string]int{"running": 1})
	b.Placed("promote", "acme", "resize")
	b.Republished("acme", 2)
	b.TookOver("acme", TakeoverDeferred)
	b.Restored("acme")
	body := scrape(t, r)
	for line, want := range map[string]string{
		`sluice_task_submissions_total{function="resize",reason="",result="accepted",tenant="acme"}`:      "2",
		`sluice_task_submissions_total{function="",reason="unauthenticated",result="rejected",tenant=""}`: "1",
		`sluice_tasks{state="queued",tenant="acme"}`:                                                      "0",
		`sluice_tasks{state="running",tenant="acme"}`:                                                     "1",
		`sluice_task_queue_placements_total{function="resize",kind="promote",tenant="acme"}`:              "1",
		`sluice_tasks_republished_total{tenant="acme"}`:                                                   "2",
		`sluice_task_takeovers_total{result="deferred",tenant="acme"}`:                                    "1",
		`sluice_tasks_restored_total{tenant="acme"}`:                                                      "1",
	} {
		if got := findLine(body, line+" "); got != line+" "+want {
			t.Errorf("got %q, want %s %s", got, line, want)
		}
	}
}
