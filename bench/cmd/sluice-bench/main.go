// Command sluice-bench runs Sluice's benchmarks (BENCHMARKS.md): each
// scenario starts what it needs — brokers, the example function, Sluice
// itself as a separate process — measures Sluice and its baselines in the
// same run, prints a table and writes the figures as JSON under
// bench/results/. `make bench` runs every scenario; `make bench B=b1` one.
//
//	sluice-bench [-scenarios b1,b3] [-runs 3] [-events N] [-<scenario>.<knob> V]...
//	sluice-bench -list
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/sluicehq/sluice/bench/internal/harness"
	"github.com/sluicehq/sluice/bench/internal/procs"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "sluice-bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout io.Writer, stderr *os.File) error {
	all := scenarios()
	fs := flag.NewFlagSet("sluice-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		selected = fs.String("scenarios", "", "comma-separated scenarios to run (default: all); see -list")
		runs     = fs.Int("runs", 3, "runs of every measurement; figures are medians")
		events   = fs.Int("events", 0, "override each scenario's main event count (see -list)")
		results  = fs.String("results", "bench/results", "directory for JSON results and logs (relative to the repository root)")
		list     = fs.Bool("list", false, "list the scenarios and exit")
	)
	bound := map[string]harness.Run{}
	for _, s := range all {
		bound[s.Name] = s.Flags(fs)
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *list {
		for _, s := range all {
			fmt.Fprintf(stdout, "%-5s %s\n", s.Name, s.Title)
		}
		return nil
	}
	if *runs < 1 {
		return errors.New("-runs must be at least 1")
	}
	chosen, err := choose(all, *selected)
	if err != nil {
		return err
	}
	root, err := repoRoot()
	if err != nil {
		return err
	}
	resultsDir := *results
	if !filepath.IsAbs(resultsDir) {
		resultsDir = filepath.Join(root, resultsDir)
	}
	progress := harness.NewProgress(stderr)

	if err := startBrokers(ctx, root, chosen, progress); err != nil {
		return err
	}
	binDir, err := os.MkdirTemp("", "sluice-bench-bin-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(binDir)
	progress.Printf("building ./cmd/sluice and ./examples/function")
	bins, err := procs.Build(ctx, root, binDir)
	if err != nil {
		return err
	}
	// What was measured is what was built, even if the tree moves on.
	commit := harness.DescribeMachine(root).Commit
	brokers := strings.Split(envOr("SLUICE_KAFKA_BROKERS", "127.0.0.1:9092"), ",")

	var failed []string
	for _, s := range chosen {
		started := time.Now()
		stamp := started.Format(harness.Stamp)
		env := &harness.Env{
			Root: root, Sluice: bins.Sluice, Function: bins.Function, Runs: *runs, Events: *events,
			KafkaBrokers: brokers, WorkDir: filepath.Join(resultsDir, s.Name+"-"+stamp),
			ID: "bench-" + s.Name + "-" + stamp, Progress: progress, Log: stderr,
		}
		if err := os.MkdirAll(env.WorkDir, 0o755); err != nil {
			return err
		}
		machine := harness.DescribeMachine(root)
		machine.Commit = commit
		progress.Printf("\n### %s: %s\n    %s\n    logs: %s", strings.ToUpper(s.Name), s.Title, machine, env.WorkDir)
		rep, runErr := bound[s.Name](ctx, env)
		res := harness.Result{Scenario: s.Name, Started: started, Finished: time.Now(), Machine: machine, Args: args, Report: rep}
		if runErr != nil {
			res.Error = runErr.Error()
			failed = append(failed, s.Name)
			progress.Printf("%s failed: %v", s.Name, runErr)
		}
		if rep != nil {
			rep.Render(stdout)
		}
		path, err := harness.WriteResult(resultsDir, res)
		if err != nil {
			return err
		}
		progress.Printf("results: %s", path)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("scenarios failed: %s", strings.Join(failed, ", "))
	}
	return nil
}

func choose(all []harness.Scenario, selected string) ([]harness.Scenario, error) {
	if strings.TrimSpace(selected) == "" {
		return all, nil
	}
	var out []harness.Scenario
	for _, name := range strings.Split(selected, ",") {
		name = strings.ToLower(strings.TrimSpace(name))
		i := slices.IndexFunc(all, func(s harness.Scenario) bool { return s.Name == name })
		if i < 0 {
			return nil, fmt.Errorf("unknown scenario %q (see -list)", name)
		}
		out = append(out, all[i])
	}
	return out, nil
}

// startBrokers runs `scripts/brokers.sh up NAME` once for every broker the
// chosen scenarios need (idempotent: a running broker is left alone).
func startBrokers(ctx context.Context, root string, chosen []harness.Scenario, progress *harness.Progress) error {
	var names []string
	for _, s := range chosen {
		for _, b := range s.Brokers {
			if !slices.Contains(names, b) {
				names = append(names, b)
			}
		}
	}
	for _, b := range names {
		progress.Printf("scripts/brokers.sh up %s", b)
		cmd := exec.CommandContext(ctx, filepath.Join(root, "scripts", "brokers.sh"), "up", b)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("starting %s: %w\n%s", b, err, out)
		}
	}
	return nil
}

// repoRoot walks up from the working directory to the directory holding go.mod.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the sluice repository (no go.mod found)")
		}
		dir = parent
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
