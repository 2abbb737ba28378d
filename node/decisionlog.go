package node

import (
	"fmt"
	"log/slog"
	"maps"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshid/meshid/authz/decisionlog"
	"github.com/meshid/meshid/internal/buildinfo"
	"github.com/meshid/meshid/internal/config"
	"github.com/meshid/meshid/internal/remote"
)

// decisionLogServiceName names authz.decision_log.service in logs and
// errors.
const decisionLogServiceName = "authz.decision_log.service"

// newDecisionLog is the decision log of authz.decision_log: lines for
// the file, events for the collector; nil when neither is set. Only a
// file keeps the policy revisions its lines name: `meshid policy why`
// replays from the file.
func newDecisionLog(cfg config.Authz, dataDir string, log *slog.Logger, reg prometheus.Registerer) (*decisionlog.Log, error) {
	if !cfg.DecisionLog.Enabled() {
		return nil, nil
	}
	o := decisionlog.Options{
		MaskHeaders:   cfg.DecisionLogMask,
		QueueSize:     cfg.DecisionLogQueue,
		SampleRate:    cfg.DecisionLogSampleRate,
		MaxFieldBytes: cfg.DecisionLogMaxFieldBytes,
		MaxInputBytes: cfg.DecisionLogMaxInputBytes,
		Log:           log,
	}
	if cfg.DecisionLog.File != "" {
		o.Revisions = decisionlog.NewRevisions(RevisionsDir(dataDir))
	}
	if svc := cfg.DecisionLog.Service; svc != nil {
		var err error
		if o.Shipper, err = newShipper(*svc, log, reg); err != nil {
			return nil, err
		}
	}
	return decisionlog.New(o), nil
}

// newShipper ships to the collector s, its events labelled with this
// node's host name (OPA's label id, its instance) and meshid's version.
func newShipper(s config.DecisionLogService, log *slog.Logger, reg prometheus.Registerer) (*decisionlog.Shipper, error) {
	client, err := remote.Client(decisionLogServiceName, s.Service, log)
	if err != nil {
		return nil, err
	}
	host, err := os.Hostname()
	if err != nil {
		return nil, fmt.Errorf("%s: the node's host name, its events' labels.id: %w", decisionLogServiceName, err)
	}
	labels := maps.Clone(s.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels["id"], labels["version"] = host, buildinfo.Read().Version
	ship := decisionlog.NewShipper(decisionlog.ShipperOptions{
		Collector:       decisionlog.RESTCollector(client, s.Resource),
		Labels:          labels,
		MinDelay:        s.MinDelay,
		MaxDelay:        s.MaxDelay,
		UploadSizeLimit: s.UploadSizeLimitBytes,
		BufferSizeLimit: s.BufferSizeLimitBytes,
		UploadTimeout:   s.Timeout,
		Log:             log,
	})
	if err := registerShipperMetrics(reg, ship); err != nil {
		return nil, err
	}
	log.Info("authz: shipping decisions to a collector", "url", s.URL+s.Resource, "labels", labels)
	return ship, nil
}

// registerShipperMetrics registers the series docs/metrics.md lists for
// authz.decision_log.service.
func registerShipperMetrics(reg prometheus.Registerer, ship *decisionlog.Shipper) error {
	if reg == nil {
		return nil
	}
	counter := func(name, help string, labels prometheus.Labels, value func(decisionlog.ShipperStats) float64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels}, func() float64 { return value(ship.Stats()) })
	}
	gauge := func(name, help string, value func(decisionlog.ShipperStats) float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 { return value(ship.Stats()) })
	}
	const (
		dropped  = "meshid_authz_decision_log_events_dropped_total"
		dropHelp = "Decision log events never shipped, by reason: buffer_full (the oldest, while the collector failed), too_large (alone past upload_size_limit_bytes gzipped), shutdown (still buffered when the flush's bound ran out)."
		failed   = "meshid_authz_decision_log_upload_failures_total"
		failHelp = "Decision log uploads the collector did not take, by class: 4xx, 5xx, other (any other status), error (no answer); the events are retried."
	)
	collectors := []prometheus.Collector{
		counter("meshid_authz_decision_log_events_shipped_total", "Decision log events the collector took (2xx to an upload holding them); at least once: a retried upload counts again.", nil,
			func(st decisionlog.ShipperStats) float64 { return float64(st.Shipped) }),
		counter(dropped, dropHelp, prometheus.Labels{"reason": "buffer_full"}, func(st decisionlog.ShipperStats) float64 { return float64(st.DroppedBufferFull) }),
		counter(dropped, dropHelp, prometheus.Labels{"reason": "too_large"}, func(st decisionlog.ShipperStats) float64 { return float64(st.DroppedTooLarge) }),
		counter(dropped, dropHelp, prometheus.Labels{"reason": "shutdown"}, func(st decisionlog.ShipperStats) float64 { return float64(st.DroppedShutdown) }),
		counter(failed, failHelp, prometheus.Labels{"class": "4xx"}, func(st decisionlog.ShipperStats) float64 { return float64(st.Failures4xx) }),
		counter(failed, failHelp, prometheus.Labels{"class": "5xx"}, func(st decisionlog.ShipperStats) float64 { return float64(st.Failures5xx) }),
		counter(failed, failHelp, prometheus.Labels{"class": "other"}, func(st decisionlog.ShipperStats) float64 { return float64(st.FailuresOther) }),
		counter(failed, failHelp, prometheus.Labels{"class": "error"}, func(st decisionlog.ShipperStats) float64 { return float64(st.FailuresError) }),
		counter("meshid_authz_decision_log_uploaded_bytes_total", "Gzipped bytes of the decision log uploads the collector took.", nil,
			func(st decisionlog.ShipperStats) float64 { return float64(st.UploadedBytes) }),
		gauge("meshid_authz_decision_log_last_upload_timestamp_seconds", "Unix time of the last decision log upload the collector took; 0 before the first.",
			func(st decisionlog.ShipperStats) float64 {
				if st.LastSuccess.IsZero() {
					return 0
				}
				return float64(st.LastSuccess.UnixNano()) / 1e9
			}),
		gauge("meshid_authz_decision_log_buffer_bytes", "JSON bytes of the decision log events waiting to be shipped.",
			func(st decisionlog.ShipperStats) float64 { return float64(st.BufferedBytes) }),
		gauge("meshid_authz_decision_log_buffer_events", "Decision log events waiting to be shipped.",
			func(st decisionlog.ShipperStats) float64 { return float64(st.BufferedEvents) }),
	}
	for _, c := range collectors {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("register decision log metrics: %w", err)
		}
	}
	return nil
}

// DecisionLogStatus is the shipper's state, in `meshid status`: its
// metrics (docs/metrics.md), and the last error in words.
type DecisionLogStatus struct {
	Collector      string    `json:"collector"` // url and resource
	Shipped        uint64    `json:"shipped"`
	BufferedEvents int       `json:"buffered_events"`
	BufferedBytes  int64     `json:"buffered_bytes"`
	Dropped        uint64    `json:"dropped"` // all reasons
	FailedUploads  uint64    `json:"failed_uploads"`
	LastSuccess    time.Time `json:"last_success,omitzero"`
	// LastError says why the last upload failed, while no upload has
	// gone through since.
	LastError string `json:"last_error,omitempty"`
}

func (n *Node) decisionLogStatus() *DecisionLogStatus {
	svc := n.cfg.Authz.DecisionLog.Service
	if svc == nil || n.authz.decisions == nil || n.authz.decisions.Shipper() == nil {
		return nil
	}
	st := n.authz.decisions.Shipper().Stats()
	return &DecisionLogStatus{
		Collector: strings.TrimSuffix(svc.URL, "/") + svc.Resource,
		Shipped:   st.Shipped, BufferedEvents: st.BufferedEvents, BufferedBytes: st.BufferedBytes,
		Dropped:       st.DroppedBufferFull + st.DroppedTooLarge + st.DroppedShutdown,
		FailedUploads: st.Failures4xx + st.Failures5xx + st.FailuresOther + st.FailuresError,
		LastSuccess:   st.LastSuccess, LastError: st.LastError,
	}
}
