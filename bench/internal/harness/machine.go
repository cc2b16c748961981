package harness

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where the figures were measured.
type Machine struct {
	Cores     int    `json:"cores"`
	MemoryMiB int64  `json:"memoryMiB"`
	CPUModel  string `json:"cpuModel"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	// LoadAvg is /proc/loadavg when the scenario started: the machine is
	// shared, so it says how noisy the run was.
	LoadAvg string `json:"loadAvg"`
	// Commit is the git commit the binaries were built from, with "-dirty"
	// for uncommitted changes in the tree.
	Commit string `json:"commit"`
}

// DescribeMachine reads /proc and git; fields it cannot read stay empty.
func DescribeMachine(root string) Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if f, err := os.Open("/proc/meminfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if rest, ok := strings.CutPrefix(s.Text(), "MemTotal:"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
				m.MemoryMiB = kb / 1024
			}
		}
		f.Close()
	}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		s := bufio.NewScanner(f)
		for s.Scan() {
			if k, v, ok := strings.Cut(s.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAvg = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("git", "-C", root, "describe", "--always", "--dirty").Output(); err == nil {
		m.Commit = strings.TrimSpace(string(out))
	}
	return m
}

// String is a one-line description for tables and docs.
func (m Machine) String() string {
	return strconv.Itoa(m.Cores) + " cores, " + strconv.FormatInt(m.MemoryMiB/1024, 10) + " GiB, " + m.CPUModel +
		", Linux " + m.Kernel + ", " + m.Go + ", load " + m.LoadAvg
}
