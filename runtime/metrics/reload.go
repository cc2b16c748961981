package metrics

import "github.com/prometheus/client_golang/prometheus"

// Reload results (the "result" label of sluice_config_reloads_total).
const (
	ReloadApplied = "applied" // the new pipelines run
	ReloadRefused = "refused" // the files had errors or a pipeline could not be built; nothing changed
)

// Reloads records configuration reloads of `sluice run` (SIGHUP). Methods
// are safe for concurrent use.
type Reloads struct {
	total *prometheus.CounterVec
	last  prometheus.Gauge
}

// Reloads returns the reload recorder, registering its collectors on first
// use; later calls return recorders over the same collectors.
func (r *Registry) Reloads() *Reloads {
	return &Reloads{
		total: reuse(r.reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "sluice_config_reloads_total",
			Help: "Configuration reloads by result: applied, or refused (the running configuration stays).",
		}, []string{"result"})),
		last: reuse(r.reg, prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "sluice_config_last_reload_success_timestamp_seconds",
			Help: "When the configuration was last loaded successfully (at start or by a reload), as a Unix time.",
		})),
	}
}

// Loaded records a successful load at unix time now; reload says whether
// it was a reload (counted) or the start.
func (x *Reloads) Loaded(now float64, reload bool) {
	x.last.Set(now)
	if reload {
		x.total.WithLabelValues(ReloadApplied).Inc()
	}
}

// Refused counts a refused reload.
func (x *Reloads) Refused() { x.total.WithLabelValues(ReloadRefused).Inc() }
