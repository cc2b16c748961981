// Command sluice runs event pipelines: message queue → CloudEvents function
// → result routes, at-least-once.
package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/pipelines"
	"github.com/sluicehq/sluice/runtime/admin"
	"github.com/sluicehq/sluice/runtime/engine"
	"github.com/sluicehq/sluice/runtime/flow"
	"github.com/sluicehq/sluice/runtime/metrics"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		var ee exitError
		if errors.As(err, &ee) {
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "sluice:", err)
		os.Exit(1)
	}
}

// exitError ends the process with a code after its message was printed.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit %d", e.code) }

func run(args []string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:           "sluice",
		Short:         "Sluice binds message queues to CloudEvents functions, at-least-once.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(runCmd(stdout, stderr), validateCmd(stdout, stderr), versionCmd(stdout), schemaCmd(stdout), pipelinesCmd(stdout), tasksCmd(stdout, stderr))
	return root.Execute()
}

func versionCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := fmt.Fprintf(stdout, "sluice %s\n", version)
			return err
		},
	}
}

func schemaCmd(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "schema",
		Short: "Print the JSON Schema of the pipeline format (for editors)",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			b, err := pipelines.Schema()
			if err != nil {
				return err
			}
			_, err = stdout.Write(b)
			return err
		},
	}
}

func validateCmd(stdout, stderr io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "validate PATH...",
		Short: "Check configuration files and print every error with file:line and field path",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(_ *cobra.Command, paths []string) error {
			cfg, err := loadConfig(paths)
			if err != nil {
				fmt.Fprintln(stderr, err)
				return exitError{code: 1}
			}
			for _, d := range validated(cfg) {
				fmt.Fprintf(stdout, "ok  %s %s (%s:%d)\n", d.kind, d.id, d.pos.File, d.pos.Line)
			}
			return nil
		},
	}
}

// validatedDoc is one document `sluice validate` lists.
type validatedDoc struct {
	kind, id string
	pos      pipelines.Position
}

// validated lists every document of cfg in file order.
func validated(cfg *pipelines.Config) []validatedDoc {
	var docs []validatedDoc
	for _, t := range cfg.Tenants {
		docs = append(docs, validatedDoc{pipelines.KindTenant, t.Metadata.Name, t.Pos})
	}
	for _, f := range cfg.Functions {
		docs = append(docs, validatedDoc{pipelines.KindFunction, f.ID(), f.Pos})
	}
	for _, b := range cfg.Buses {
		docs = append(docs, validatedDoc{pipelines.KindBus, b.ID(), b.Pos})
	}
	for _, p := range cfg.Pipelines {
		docs = append(docs, validatedDoc{pipelines.KindPipeline, p.ID(), p.Pos})
	}
	slices.SortStableFunc(docs, func(a, b validatedDoc) int {
		return cmp.Or(strings.Compare(a.pos.File, b.pos.File), cmp.Compare(a.pos.Line, b.pos.Line))
	})
	return docs
}

func pipelinesCmd(stdout io.Writer) *cobra.Command {
	var addr string
	c := &cobra.Command{
		Use:   "pipelines",
		Short: "Show the pipelines of a running Sluice (GET /v1/pipelines)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/pipelines", nil)
			if err != nil {
				return err
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return fmt.Errorf("admin API at %s: %w", addr, err)
			}
			defer resp.Body.Close()
			_, err = io.Copy(stdout, resp.Body)
			return err
		},
	}
	c.Flags().StringVar(&addr, "admin-addr", "127.0.0.1:8090", "admin address of the running Sluice")
	return c
}

type runFlags struct {
	adminAddr string
	logFormat string
	logLevel  string
	drain     time.Duration
	pprof     bool
	async     asyncFlags
}

func runCmd(stdout, stderr io.Writer) *cobra.Command {
	var f runFlags
	c := &cobra.Command{
		Use:   "run PATH...",
		Short: "Run the pipelines in the given files or directories until SIGINT/SIGTERM (SIGHUP reloads the pipelines)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, paths []string) error {
			return runPipelines(cmd.Context(), paths, f, stdout, stderr)
		},
	}
	c.Flags().StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:8090", "listen address of /metrics, /healthz, /readyz and the admin API")
	c.Flags().StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	c.Flags().StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	c.Flags().DurationVar(&f.drain, "drain-timeout", 30*time.Second, "on SIGTERM, how long in-flight events may finish before they are abandoned for redelivery")
	c.Flags().BoolVar(&f.pprof, "pprof", false, "serve Go profiles at /debug/pprof/ on the admin address")
	f.async.register(c)
	return c
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch strings.ToLower(format) {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not text or json", format)
}

// loadConfig loads every document kind. validate and run share it, so they
// accept exactly the same files.
func loadConfig(paths []string) (*pipelines.Config, error) {
	return pipelines.Loader{CheckPattern: checkPattern}.Config(paths...)
}

func runPipelines(parent context.Context, paths []string, f runFlags, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(paths)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitError{code: 1}
	}
	specs := cfg.Pipelines
	if parent == nil {
		parent = context.Background()
	}
	ctx, stop := signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
	defer stop()

	reg := metrics.New(version)
	deps := engine.Deps{
		Metrics: reg, Limiters: flow.NewRegistry(), Log: log, Stdout: stdout, DrainTimeout: f.drain,
	}
	busRT, err := startBuses(ctx, cfg, f.async, deps, reg, engine.DefaultComponents())
	if err != nil {
		return err
	}
	defer busRT.close()
	comps := busRT.components(engine.DefaultComponents())
	runner, err := engine.NewRunner(specs, deps, comps)
	if err != nil {
		stop()
		return errors.Join(err, busRT.wait())
	}
	asyncRT, err := startAsync(ctx, cfg, f.async, deps, comps)
	if err != nil {
		stop()
		return errors.Join(err, runner.Run(ctx), busRT.wait())
	}
	defer asyncRT.close()
	ln, err := net.Listen("tcp", f.adminAddr)
	if err != nil {
		stop()
		return errors.Join(fmt.Errorf("admin listener: %w", err), asyncRT.wait(), busRT.wait())
	}
	busAPI, err := busRT.api(cfg.Tenants)
	if err != nil {
		stop()
		return errors.Join(err, asyncRT.wait(), busRT.wait())
	}
	handler := busRT.mount(asyncRT.mount(admin.Handler(runner, reg, admin.Options{Pprof: f.pprof})), busAPI)
	// The bus API is served on both listeners; the invoke API on one.
	apiSrv, err := startAPI(f.async.apiAddr, asyncRT, busAPI, log)
	if err != nil {
		stop()
		return errors.Join(err, asyncRT.wait(), busRT.wait())
	}
	defer apiSrv.shutdown()
	srv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	srvErr := make(chan error, 1)
	go func() { srvErr <- srv.Serve(ln) }()
	log.Info("sluice started", "version", version, "pipelines", len(specs), "admin", "http://"+ln.Addr().String())

	reloads := reg.Reloads()
	reloads.Loaded(float64(time.Now().Unix()), false)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reloadCtx, stopReloads := context.WithCancel(ctx)
	reloaderDone := make(chan struct{})
	go func() {
		defer close(reloaderDone)
		reloadOnHUP(reloadCtx, hup, paths, cfg, runner, reloads, log)
	}()

	runErr := runner.Run(ctx)
	stopReloads()
	<-reloaderDone
	if runErr != nil && busRT != nil {
		stop() // every pipeline failed: stop the buses too
	}
	if asyncRT != nil {
		if runErr != nil {
			stop() // every pipeline failed: stop the async service too
		}
		runErr = errors.Join(runErr, asyncRT.wait())
	}
	runErr = errors.Join(runErr, busRT.wait())

	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(shutCtx)
	if err := <-srvErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("admin server", "err", err)
	}
	log.Info("sluice stopped")
	return runErr
}

// reloadOnHUP reloads the configuration on every SIGHUP until ctx ends:
// the files are loaded and validated again (all errors reported, with
// positions), then the runner replaces the pipelines that changed (see
// engine.Runner.Reload). A refused reload leaves everything running as it
// was. Tenant, Function and Bus documents are read only at start: a change
// to them is reported, not applied.
func reloadOnHUP(ctx context.Context, hup <-chan os.Signal, paths []string, started *pipelines.Config, runner *engine.Runner, rec *metrics.Reloads, log *slog.Logger) {
	startDocs := otherDocs(started)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		log.Info("SIGHUP: reloading the configuration", "paths", paths)
		next, err := loadConfig(paths)
		if err != nil {
			rec.Refused()
			log.Error("configuration reload refused; the running configuration stays", "err", err)
			continue
		}
		if otherDocs(next) != startDocs {
			log.Warn("Tenant, Function or Bus documents changed: they are read only at start; restart Sluice to apply them (pipelines are reloaded)")
		}
		res, err := runner.Reload(next.Pipelines)
		if err != nil {
			rec.Refused()
			log.Error("configuration reload refused; the running configuration stays", "err", err)
			continue
		}
		rec.Loaded(float64(time.Now().Unix()), true)
		log.Info("configuration reload applied", "started", res.Started, "restarted", res.Restarted,
			"stopped", res.Stopped, "unchanged", len(res.Unchanged))
	}
}

// otherDocs is the canonical form of the documents a reload does not apply.
func otherDocs(cfg *pipelines.Config) string {
	b, err := json.Marshal([]any{cfg.Tenants, cfg.Functions, cfg.Buses})
	if err != nil {
		return err.Error()
	}
	return string(b)
}
