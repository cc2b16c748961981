package metrics

import "testing"

func TestReloads(t *testing.T) {
	r := New("test")
	x := r.Reloads()
	x.Loaded(100, false)
	x.Refused()
	r.Reloads().Loaded(200, true)
	body := scrape(t, r)
	for line, want := range map[string]string{
		`sluice_config_reloads_total{result="applied"}`:       "1",
		`sluice_config_reloads_total{result="refused"}`:       "1",
		`sluice_config_last_reload_success_timestamp_seconds`: "200",
	} {
		if got := findLine(body, line+" "); got != line+" "+want {
			t.Errorf("got %q, want %s %s", got, line, want)
		}
	}
}
