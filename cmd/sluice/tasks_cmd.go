package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// tasksClient calls the task API of a running Sluice as one tenant.
type tasksClient struct {
	api, key       string
	stdout, stderr io.Writer
}

// do sends one request and prints the JSON answer, indented; a non-2xx
// answer prints the API's error and exits 1.
func (c *tasksClient) do(ctx context.Context, method, path string, body []byte) error {
	base := c.api
	if !strings.Contains(base, "://") {
		base = "http://" + base
	}
	key := c.key
	if key == "" {
		key = os.Getenv("SLUICE_API_KEY")
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(base, "/")+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("task API at %s: %w", c.api, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("task API at %s: %w", c.api, err)
	}
	if resp.StatusCode >= 300 {
		var e struct{ Error, Code string }
		if json.Unmarshal(b, &e) == nil && e.Error != "" {
			fmt.Fprintf(c.stderr, "%s (%s, HTTP %d)\n", e.Error, e.Code, resp.StatusCode)
		} else {
			fmt.Fprintf(c.stderr, "HTTP %d: %s\n", resp.StatusCode, bytes.TrimSpace(b))
		}
		return exitError{code: 1}
	}
	if len(b) == 0 {
		return nil
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		_, err = c.stdout.Write(b)
		return err
	}
	out.WriteByte('\n')
	_, err = c.stdout.Write(out.Bytes())
	return err
}

func tasksCmd(stdout, stderr io.Writer) *cobra.Command {
	c := &tasksClient{stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "tasks",
		Short: "Inspect and manage the asynchronous invocations of a running Sluice (the task API)",
		Long: "Calls the task API of a running Sluice as the tenant owning --key (default $SLUICE_API_KEY); " +
			"a tenant only sees its own tasks. See docs/async.md.",
	}
	root.PersistentFlags().StringVar(&c.api, "api", "127.0.0.1:8090", "address of the task API (sluice run's --api-addr, else its --admin-addr)")
	root.PersistentFlags().StringVar(&c.key, "key", "", "the tenant's API key (default $SLUICE_API_KEY)")

	oneTask := func(use, short, method, suffix string) *cobra.Command {
		return &cobra.Command{
			Use: use + " TASK_ID", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				var body []byte
				if method == http.MethodPost {
					body = []byte("{}")
				}
				return c.do(cmd.Context(), method, "/v1/tasks/"+url.PathEscape(args[0])+suffix, body)
			},
		}
	}
	var f struct {
		function, state, after, before, cursor string
		limit                                  int
	}
	list := &cobra.Command{
		Use: "list", Short: "List tasks, newest first (one page; --cursor continues)", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			for k, v := range map[string]string{"function": f.function, "state": f.state, "after": f.after, "before": f.before, "cursor": f.cursor} {
				if v != "" {
					q.Set(k, v)
				}
			}
			if f.limit > 0 {
				q.Set("limit", strconv.Itoa(f.limit))
			}
			path := "/v1/tasks"
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			return c.do(cmd.Context(), http.MethodGet, path, nil)
		},
	}
	list.Flags().StringVar(&f.function, "function", "", "only this function's tasks")
	list.Flags().StringVar(&f.state, "state", "", "only tasks in these states (comma-separated: queued, running, retrying, succeeded, failed, dead-lettered, paused, cancelled, expired, duplicate)")
	list.Flags().StringVar(&f.after, "after", "", "only tasks received at or after this RFC 3339 time")
	list.Flags().StringVar(&f.before, "before", "", "only tasks received before this RFC 3339 time")
	list.Flags().IntVar(&f.limit, "limit", 0, "page size (1..1000, default 100)")
	list.Flags().StringVar(&f.cursor, "cursor", "", "the \"next\" of the previous page")

	oneFunction := func(action, short string) *cobra.Command {
		return &cobra.Command{
			Use: action + " FUNCTION", Short: short, Args: cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return c.do(cmd.Context(), http.MethodPost, "/v1/functions/"+url.PathEscape(args[0])+":"+action, []byte("{}"))
			},
		}
	}

	var b struct{ function, state, after, before string }
	batch := &cobra.Command{
		Use:   "batch cancel|retry|delete",
		Short: "Apply one operation to every task the filter selects (at least one filter flag is required)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			op := args[0]
			if op != "cancel" && op != "retry" && op != "delete" {
				return fmt.Errorf("batch %q: want cancel, retry or delete", op)
			}
			if b.function == "" && b.state == "" && b.after == "" && b.before == "" {
				return fmt.Errorf("batch %s: give at least one of --function, --state, --after, --before (a batch over every task is too easy to run by mistake)", op)
			}
			filter := map[string]any{}
			if b.function != "" {
				filter["function"] = b.function
			}
			if b.state != "" {
				var states []string
				for st := range strings.SplitSeq(b.state, ",") {
					if st = strings.TrimSpace(st); st != "" {
						states = append(states, st)
					}
				}
				filter["states"] = states
			}
			for k, v := range map[string]string{"after": b.after, "before": b.before} {
				if v == "" {
					continue
				}
				if _, err := time.Parse(time.RFC3339Nano, v); err != nil {
					return fmt.Errorf("batch --%s %q: want an RFC 3339 time", k, v)
				}
				filter[k] = v
			}
			body, err := json.Marshal(map[string]any{"op": op, "filter": filter})
			if err != nil {
				return err
			}
			return c.do(cmd.Context(), http.MethodPost, "/v1/tasks:batch", body)
		},
	}
	batch.Flags().StringVar(&b.function, "function", "", "only this function's tasks")
	batch.Flags().StringVar(&b.state, "state", "", "only tasks in these states (comma-separated)")
	batch.Flags().StringVar(&b.after, "after", "", "only tasks received at or after this RFC 3339 time")
	batch.Flags().StringVar(&b.before, "before", "", "only tasks received before this RFC 3339 time")

	root.AddCommand(
		oneTask("get", "Show one task", http.MethodGet, ""),
		list,
		oneTask("cancel", "Cancel a task (also while it runs)", http.MethodPost, ":cancel"),
		oneTask("retry", "Run a failed, dead-lettered, cancelled or expired task again", http.MethodPost, ":retry"),
		oneTask("delete", "Delete a done task", http.MethodDelete, ""),
		oneFunction("pause", "Pause a function: its queued tasks wait (state paused) until it is resumed"),
		oneFunction("resume", "Resume a paused function"),
		batch,
	)
	return root
}
