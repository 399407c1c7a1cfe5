// Offline checks of Dialer's rendered Kubernetes manifests and Dockerfile.
// Called by validate.sh; prints one line per problem and exits 1 if any.
//
//   node check.mjs [--render NAME=FILE]... [--external NAME=Kind/name]...
//                  [--dockerfile FILE] [--dockerignore FILE] [--repo DIR]
//                  [--bin-dir DIR]
//
// --render      a `kubectl kustomize` output to parse, schema-check and policy-check
//               (NAME "prod" also gets the production rules)
// --kustomization  the kustomization.yaml of a render: each `images:` entry must
//               change some image (an unmatched name is silently ignored by kustomize)
// --external    an object the render references but production supplies itself
// --dockerfile  deploy/docker/Dockerfile: targets, users, entrypoints, packages
// --dockerignore, --repo   the build context: COPY sources exist and are not ignored
// --bin-dir     built binaries: `--check-config` on the rendered config and env of
//               each container, and their shared libraries against the runtime packages
import { spawnSync } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { parseAllDocuments } from "yaml";

const problems = [];
const notes = [];
const fail = (where, msg) => problems.push(`${where}: ${msg}`);

// ------------------------------------------------------------------ arguments
const opts = { render: [], kustomization: [], external: [], dockerfile: null, dockerignore: null, repo: null, binDir: null };
{
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i++) {
    const v = a[i + 1];
    switch (a[i]) {
      case "--render": opts.render.push(v.split(/=(.*)/s).slice(0, 2)); i++; break;
      case "--kustomization": opts.kustomization.push(v.split(/=(.*)/s).slice(0, 2)); i++; break;
      case "--external": opts.external.push(v.split(/=(.*)/s).slice(0, 2)); i++; break;
      case "--dockerfile": opts.dockerfile = v; i++; break;
      case "--dockerignore": opts.dockerignore = v; i++; break;
      case "--repo": opts.repo = v; i++; break;
      case "--bin-dir": opts.binDir = v; i++; break;
      default: console.error(`check.mjs: unknown argument ${a[i]}`); process.exit(2);
    }
  }
}

// --------------------------------------------------------------- the models
// apiVersion -> module with one class per kind. Groups without published
// models (the RabbitMQ operators') get structural checks only.
async function modelFor(apiVersion, kind) {
  let mod;
  if (apiVersion.startsWith("keda.sh/")) mod = `@kubernetes-models/keda/${apiVersion}`;
  else if (!apiVersion.includes("/")) mod = `kubernetes-models/${apiVersion}`;
  else if (/^[a-z0-9]+(\.k8s\.io)?\/v[0-9a-z]+$/.test(apiVersion)) mod = `kubernetes-models/${apiVersion}`;
  else return null;
  try {
    const m = await import(mod);
    return m[kind] ?? null;
  } catch {
    return null;
  }
}
const UNMODELLED_GROUPS = new Set(["rabbitmq.com"]);

// Field names the schemas do not reject (they allow unknown properties):
// a misspelt key would silently do nothing, so the parts that matter are
// checked against the Kubernetes field lists here.
const KNOWN = {
  object: ["apiVersion", "kind", "metadata", "spec", "data", "stringData", "binaryData", "type", "immutable",
    "automountServiceAccountToken", "imagePullSecrets", "secrets"],
  metadata: ["name", "namespace", "labels", "annotations", "generateName", "finalizers", "ownerReferences"],
  deploymentSpec: ["replicas", "selector", "template", "strategy", "minReadySeconds", "revisionHistoryLimit",
    "progressDeadlineSeconds", "paused"],
  jobSpec: ["template", "backoffLimit", "activeDeadlineSeconds", "ttlSecondsAfterFinished", "completions",
    "parallelism", "completionMode", "suspend", "podFailurePolicy", "backoffLimitPerIndex", "maxFailedIndexes",
    "manualSelector", "selector", "podReplacementPolicy", "successPolicy", "managedBy"],
  podSpec: ["containers", "initContainers", "ephemeralContainers", "volumes", "serviceAccountName",
    "automountServiceAccountToken", "terminationGracePeriodSeconds", "securityContext", "affinity",
    "topologySpreadConstraints", "nodeSelector", "tolerations", "priorityClassName", "restartPolicy",
    "dnsPolicy", "dnsConfig", "hostname", "subdomain", "enableServiceLinks", "imagePullSecrets",
    "activeDeadlineSeconds", "schedulerName", "runtimeClassName", "preemptionPolicy", "priority",
    "readinessGates", "shareProcessNamespace", "hostAliases", "os", "overhead", "schedulingGates",
    "resourceClaims", "setHostnameAsFQDN", "hostNetwork", "hostPID", "hostIPC", "hostUsers", "nodeName",
    "serviceAccount", "resources"],
  container: ["name", "image", "imagePullPolicy", "command", "args", "workingDir", "env", "envFrom", "ports",
    "resources", "securityContext", "volumeMounts", "volumeDevices", "startupProbe", "livenessProbe",
    "readinessProbe", "lifecycle", "terminationMessagePath", "terminationMessagePolicy", "stdin", "stdinOnce",
    "tty", "restartPolicy", "resizePolicy"],
  containerSecurityContext: ["runAsNonRoot", "runAsUser", "runAsGroup", "allowPrivilegeEscalation",
    "readOnlyRootFilesystem", "privileged", "capabilities", "seccompProfile", "seLinuxOptions", "procMount",
    "windowsOptions", "appArmorProfile"],
  podSecurityContext: ["runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "fsGroupChangePolicy",
    "supplementalGroups", "supplementalGroupsPolicy", "seccompProfile", "seLinuxOptions", "sysctls",
    "windowsOptions", "appArmorProfile", "seLinuxChangePolicy"],
  probe: ["httpGet", "tcpSocket", "exec", "grpc", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
    "successThreshold", "failureThreshold", "terminationGracePeriodSeconds"],
  resources: ["requests", "limits", "claims"],
};
function known(where, obj, list) {
  if (!obj || typeof obj !== "object") return;
  for (const k of Object.keys(obj)) if (!KNOWN[list].includes(k)) fail(where, `unknown field "${k}"`);
}

// ------------------------------------------------------------------ helpers
const idOf = (o) => `${o.kind}/${o.metadata?.name ?? "?"}`;
const POD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "ReplicaSet", "Pod"]);
function podTemplate(o) {
  if (o.kind === "Pod") return { metadata: o.metadata, spec: o.spec };
  if (o.kind === "CronJob") return o.spec?.jobTemplate?.spec?.template;
  return o.spec?.template;
}
function selects(selector, labels) {
  if (!selector || !labels) return false;
  const ml = selector.matchLabels ?? {};
  for (const [k, v] of Object.entries(ml)) if (labels[k] !== v) return false;
  for (const e of selector.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, e.key);
    if (e.operator === "In" && !(has && e.values.includes(labels[e.key]))) return false;
    if (e.operator === "NotIn" && has && e.values.includes(labels[e.key])) return false;
    if (e.operator === "Exists" && !has) return false;
    if (e.operator === "DoesNotExist" && has) return false;
  }
  return Object.keys(ml).length + (selector.matchExpressions ?? []).length > 0;
}
// Kubernetes quantities to numbers (cpu in cores, memory in bytes).
function qty(s) {
  if (typeof s === "number") return s;
  const m = /^([0-9.]+)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$/.exec(String(s));
  if (!m) return NaN;
  const mul = { m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, Ti: 1024 ** 4 };
  return parseFloat(m[1]) * (m[2] ? mul[m[2]] : 1);
}
// The tag of an image reference, "" when there is none, or "@digest".
function imageTag(image) {
  if (image.includes("@")) return "@" + image.split("@")[1];
  const last = image.split("/").pop();
  return last.includes(":") ? last.split(":").pop() : "";
}
function pct(v, n) {
  if (typeof v === "string" && v.endsWith("%")) return Math.ceil((parseFloat(v) / 100) * n);
  return v;
}

// ------------------------------------------------------------- one render
async function checkRender(name, file, external) {
  const where0 = `${name}`;
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    fail(where0, `cannot read ${file}: ${e.message}`);
    return;
  }
  const docs = parseAllDocuments(text, { prettyErrors: true });
  const objs = [];
  for (const d of docs) {
    for (const e of d.errors) fail(where0, `YAML: ${e.message.split("\n")[0]}`);
    const o = d.toJS();
    if (o == null) continue;
    if (typeof o !== "object" || Array.isArray(o)) {
      fail(where0, "a document is not a mapping");
      continue;
    }
    // kustomize wraps long base64 values; the API server's decoder skips
    // the newlines, the schema's "byte" format does not.
    if (o.kind === "Secret" && o.data)
      for (const k of Object.keys(o.data)) if (typeof o.data[k] === "string") o.data[k] = o.data[k].replace(/\s+/g, "");
    objs.push(o);
  }
  if (problems.length && objs.length === 0) return;
  if (objs.length === 0) fail(where0, "the render is empty");

  const byKind = (k) => objs.filter((o) => o.kind === k);
  const find = (k, n) => objs.find((o) => o.kind === k && o.metadata?.name === n);
  const isExternal = (k, n) => external.includes(`${k}/${n}`);
  const seen = new Set();

  // 1. Schema: every object against its model.
  for (const o of objs) {
    const where = `${name}: ${idOf(o)}`;
    if (!o.apiVersion || !o.kind || !o.metadata?.name) {
      fail(where, "apiVersion, kind and metadata.name are required");
      continue;
    }
    const key = `${o.apiVersion}/${o.kind}/${o.metadata.namespace ?? ""}/${o.metadata.name}`;
    if (seen.has(key)) fail(where, "defined twice");
    seen.add(key);
    known(where, o, "object");
    known(`${where} metadata`, o.metadata, "metadata");
    const group = o.apiVersion.includes("/") ? o.apiVersion.split("/")[0] : "";
    const Model = await modelFor(o.apiVersion, o.kind);
    if (!Model) {
      if (!UNMODELLED_GROUPS.has(group)) fail(where, `no schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    try {
      new Model(o).validate();
    } catch (e) {
      fail(where, `schema: ${e.message}`);
    }
  }

  // 2. Labels.
  for (const o of objs) {
    const l = o.metadata?.labels ?? {};
    if (!l["app.kubernetes.io/name"]) fail(`${name}: ${idOf(o)}`, "label app.kubernetes.io/name missing");
    if (o.kind !== "Namespace" && !l["app.kubernetes.io/part-of"])
      fail(`${name}: ${idOf(o)}`, "label app.kubernetes.io/part-of missing");
  }

  // 3. Workloads: containers, security, probes, references.
  const workloads = objs.filter((o) => POD_KINDS.has(o.kind));
  const autoscaled = new Map(); // Deployment name -> min replicas
  for (const h of byKind("HorizontalPodAutoscaler")) {
    const t = h.spec?.scaleTargetRef ?? {};
    const w = `${name}: ${idOf(h)}`;
    if (!find(t.kind, t.name)) fail(w, `scaleTargetRef ${t.kind}/${t.name} not in the render`);
    if (autoscaled.has(t.name)) fail(w, `${t.name} has two autoscalers`);
    autoscaled.set(t.name, h.spec?.minReplicas ?? 1);
    if ((h.spec?.minReplicas ?? 1) > h.spec?.maxReplicas) fail(w, "minReplicas > maxReplicas");
  }
  for (const s of byKind("ScaledObject")) {
    const t = s.spec?.scaleTargetRef ?? {};
    const w = `${name}: ${idOf(s)}`;
    if (!find(t.kind ?? "Deployment", t.name)) fail(w, `scaleTargetRef ${t.name} not in the render`);
    if (autoscaled.has(t.name)) fail(w, `${t.name} has two autoscalers`);
    autoscaled.set(t.name, s.spec?.minReplicaCount ?? 0);
    if ((s.spec?.minReplicaCount ?? 0) > (s.spec?.maxReplicaCount ?? 100)) fail(w, "minReplicaCount > maxReplicaCount");
    for (const tr of s.spec?.triggers ?? []) {
      if (tr.type !== "rabbitmq") continue;
      const md = tr.metadata ?? {};
      if (md.protocol !== "http") fail(w, "rabbitmq trigger needs protocol: http (so unacked jobs count)");
      if (md.mode !== "QueueLength") fail(w, "rabbitmq trigger mode must be QueueLength");
      if (md.queueName !== "dialer.dial-jobs") fail(w, `rabbitmq trigger queueName is ${md.queueName}, not dialer.dial-jobs`);
      if (!(parseInt(md.value, 10) > 0)) fail(w, "rabbitmq trigger value must be a positive number");
      const ref = tr.authenticationRef?.name;
      if (md.host || md.hostFromEnv) fail(w, "the broker URL must come from a TriggerAuthentication, not metadata");
      if (!ref) fail(w, "rabbitmq trigger has no authenticationRef");
      else if (!find(tr.authenticationRef.kind ?? "TriggerAuthentication", ref))
        fail(w, `TriggerAuthentication ${ref} not in the render`);
    }
  }
  for (const ta of byKind("TriggerAuthentication")) {
    for (const r of ta.spec?.secretTargetRef ?? []) {
      const s = find("Secret", r.name);
      if (!s && !isExternal("Secret", r.name)) fail(`${name}: ${idOf(ta)}`, `Secret ${r.name} not in the render`);
      else if (s && !(r.key in (s.data ?? {})) && !(r.key in (s.stringData ?? {})))
        fail(`${name}: ${idOf(ta)}`, `Secret ${r.name} has no key ${r.key}`);
    }
  }

  for (const o of workloads) {
    const w = `${name}: ${idOf(o)}`;
    const tpl = podTemplate(o);
    const spec = tpl?.spec;
    if (!spec) {
      fail(w, "no pod template");
      continue;
    }
    if (o.kind === "Deployment") {
      known(`${w} spec`, o.spec, "deploymentSpec");
      if (!selects(o.spec.selector, tpl.metadata?.labels)) fail(w, "selector does not match the template's labels");
      if (autoscaled.has(o.metadata.name) && o.spec.replicas !== undefined)
        fail(w, "spec.replicas is set on an autoscaled Deployment (every apply would reset the scale)");
      if (spec.terminationGracePeriodSeconds === undefined) fail(w, "terminationGracePeriodSeconds not set");
      if (o.metadata.name === "dialer-worker" && !(spec.terminationGracePeriodSeconds >= 60))
        fail(w, "the worker needs terminationGracePeriodSeconds >= 60 to finish in-flight carrier requests");
      if (/^dialer-(api|scheduler)$/.test(o.metadata.name) && !(spec.terminationGracePeriodSeconds >= 30))
        fail(w, "terminationGracePeriodSeconds < 30 is too short for a drain");
    }
    if (o.kind === "Job") {
      known(`${w} spec`, o.spec, "jobSpec");
      if (o.spec.backoffLimit === undefined) fail(w, "backoffLimit not set");
      if (o.spec.ttlSecondsAfterFinished === undefined) fail(w, "ttlSecondsAfterFinished not set");
      if (!["Never", "OnFailure"].includes(spec.restartPolicy)) fail(w, "restartPolicy must be Never or OnFailure");
    }
    known(`${w} pod spec`, spec, "podSpec");
    known(`${w} pod securityContext`, spec.securityContext, "podSecurityContext");
    if (spec.hostNetwork || spec.hostPID || spec.hostIPC) fail(w, "host namespaces are not allowed");
    if (spec.automountServiceAccountToken !== false) fail(w, "automountServiceAccountToken must be false");
    const sa = spec.serviceAccountName;
    if (sa && sa !== "default" && !find("ServiceAccount", sa) && !isExternal("ServiceAccount", sa)) fail(w, `ServiceAccount ${sa} not in the render`);
    const psc = spec.securityContext ?? {};
    const volumes = new Map((spec.volumes ?? []).map((v) => [v.name, v]));
    for (const v of spec.volumes ?? []) {
      const type = Object.keys(v).find((k) => k !== "name");
      if (!["configMap", "secret", "projected", "emptyDir", "downwardAPI"].includes(type))
        fail(w, `volume ${v.name}: type ${type} is not allowed`);
      const refs = [];
      if (v.configMap) refs.push(["ConfigMap", v.configMap]);
      if (v.secret) refs.push(["Secret", { name: v.secret.secretName, optional: v.secret.optional }]);
      for (const src of v.projected?.sources ?? []) {
        if (src.configMap) refs.push(["ConfigMap", src.configMap]);
        if (src.secret) refs.push(["Secret", src.secret]);
      }
      for (const [k, r] of refs)
        if (!r.optional && !find(k, r.name) && !isExternal(k, r.name))
          fail(w, `volume ${v.name}: ${k} ${r.name} not in the render`);
    }
    const all = [...(spec.initContainers ?? []), ...(spec.containers ?? [])];
    if (!spec.containers?.length) fail(w, "no containers");
    for (const c of all) {
      const cw = `${w} container ${c.name}`;
      known(cw, c, "container");
      known(`${cw} securityContext`, c.securityContext, "containerSecurityContext");
      known(`${cw} resources`, c.resources, "resources");
      // Image: pinned, from a registry, never latest.
      const img = c.image ?? "";
      const tag = imageTag(img);
      if (!tag) fail(cw, `image "${img}" has no tag`);
      else if (tag === "latest") fail(cw, `image "${img}" uses the latest tag`);
      if (!img.includes("/")) fail(cw, `image "${img}" has no registry (kustomize images: not applied?)`);
      if (c.imagePullPolicy === "Always" && tag && !tag.startsWith("@")) notes.push(`${cw}: imagePullPolicy Always`);
      // Resources.
      const r = c.resources ?? {};
      for (const kind of ["requests", "limits"])
        for (const res of ["cpu", "memory"])
          if (r[kind]?.[res] === undefined) fail(cw, `resources.${kind}.${res} missing`);
          else if (!(qty(r[kind][res]) > 0)) fail(cw, `resources.${kind}.${res} is not a positive quantity`);
      for (const res of ["cpu", "memory"])
        if (r.requests?.[res] !== undefined && r.limits?.[res] !== undefined &&
            qty(r.requests[res]) > qty(r.limits[res]))
          fail(cw, `resources.requests.${res} exceeds the limit`);
      // Security context (container values override the pod's).
      const sc = c.securityContext ?? {};
      const eff = (k) => (sc[k] !== undefined ? sc[k] : psc[k]);
      if (eff("runAsNonRoot") !== true) fail(cw, "runAsNonRoot must be true");
      if (eff("runAsUser") !== 10001) fail(cw, `runAsUser must be 10001, is ${eff("runAsUser")}`);
      if (eff("runAsGroup") === 0) fail(cw, "runAsGroup 0 (root group)");
      if (sc.allowPrivilegeEscalation !== false) fail(cw, "allowPrivilegeEscalation must be false");
      if (sc.readOnlyRootFilesystem !== true) fail(cw, "readOnlyRootFilesystem must be true");
      if (sc.privileged === true) fail(cw, "privileged");
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) fail(cw, "capabilities.drop must include ALL");
      if ((sc.capabilities?.add ?? []).length) fail(cw, "capabilities.add must be empty");
      if (eff("seccompProfile")?.type !== "RuntimeDefault") fail(cw, "seccompProfile.type must be RuntimeDefault");
      // A writable /tmp on an emptyDir; every mount names a volume.
      const mounts = c.volumeMounts ?? [];
      const tmp = mounts.find((m) => m.mountPath === "/tmp");
      if (!tmp || !volumes.get(tmp.name)?.emptyDir) fail(cw, "/tmp must be an emptyDir mount");
      for (const m of mounts) if (!volumes.has(m.name)) fail(cw, `volumeMount ${m.name} names no volume`);
      // Env references.
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef ?? e.valueFrom?.configMapKeyRef;
        if (!ref) continue;
        const k = e.valueFrom.secretKeyRef ? "Secret" : "ConfigMap";
        const target = find(k, ref.name);
        if (!target) {
          if (!ref.optional && !isExternal(k, ref.name)) fail(cw, `env ${e.name}: ${k} ${ref.name} not in the render`);
        } else if (!(ref.key in (target.data ?? {})) && !(ref.key in (target.stringData ?? {})) && !ref.optional) {
          fail(cw, `env ${e.name}: ${k} ${ref.name} has no key ${ref.key}`);
        }
      }
      for (const ef of c.envFrom ?? []) {
        const [k, ref] = ef.secretRef ? ["Secret", ef.secretRef] : ["ConfigMap", ef.configMapRef];
        if (ref && !ref.optional && !find(k, ref.name) && !isExternal(k, ref.name))
          fail(cw, `envFrom: ${k} ${ref.name} not in the render`);
      }
      if (o.kind !== "Deployment" || (spec.initContainers ?? []).includes(c)) continue;
      // Probes: startup and liveness on /healthz (the process), readiness on
      // /readyz (its dependencies), on a declared port.
      const ports = c.ports ?? [];
      const want = { startupProbe: "/healthz", livenessProbe: "/healthz", readinessProbe: "/readyz" };
      for (const [p, wantPath] of Object.entries(want)) {
        const pr = c[p];
        if (!pr) {
          fail(cw, `${p} missing`);
          continue;
        }
        known(`${cw} ${p}`, pr, "probe");
        if (!pr.httpGet) {
          fail(cw, `${p} must be an httpGet probe`);
          continue;
        }
        if (pr.httpGet.path !== wantPath) fail(cw, `${p} must GET ${wantPath}, not ${pr.httpGet.path}`);
        const port = pr.httpGet.port;
        if (!ports.some((x) => x.name === port || x.containerPort === port)) fail(cw, `${p} port ${port} is not declared`);
      }
      if (c.livenessProbe && c.startupProbe === undefined) fail(cw, "livenessProbe without startupProbe");
      // Every server binds all interfaces in a pod.
      const envVal = (n) => {
        const e = (c.env ?? []).find((x) => x.name === n);
        if (e) return e.value;
        for (const ef of c.envFrom ?? []) {
          const cm = ef.configMapRef && find("ConfigMap", ef.configMapRef.name);
          if (cm?.data?.[n] !== undefined) return cm.data[n];
        }
        return undefined;
      };
      if (envVal("DIALER_HTTP_LISTEN") !== "0.0.0.0" && envVal("DIALER_SIM_LISTEN") !== "0.0.0.0")
        fail(cw, "DIALER_HTTP_LISTEN (or DIALER_SIM_LISTEN) must be 0.0.0.0");
      const stop = c.lifecycle?.preStop?.exec?.command;
      if (stop && stop[0]?.endsWith("sleep") && !(parseInt(stop[1], 10) < (spec.terminationGracePeriodSeconds ?? 30)))
        fail(cw, "preStop sleep leaves no time to drain");
      const ann = tpl.metadata?.annotations ?? {};
      if (ann["prometheus.io/scrape"] === "true") {
        const mp = parseInt(ann["prometheus.io/port"], 10);
        if (!ports.some((x) => x.containerPort === mp)) fail(cw, `prometheus.io/port ${ann["prometheus.io/port"]} is not a container port`);
      } else {
        fail(cw, "pod template lacks prometheus.io/scrape annotations");
      }
    }
  }

  // 4. Disruption budgets: every Deployment that runs more than one pod has
  //    one, and none of them blocks a drain outright.
  const pdbs = byKind("PodDisruptionBudget");
  for (const d of byKind("Deployment")) {
    const w = `${name}: ${idOf(d)}`;
    const labels = d.spec?.template?.metadata?.labels;
    const min = autoscaled.has(d.metadata.name) ? autoscaled.get(d.metadata.name) : (d.spec?.replicas ?? 1);
    const mine = pdbs.filter((p) => selects(p.spec?.selector, labels));
    if (mine.length > 1) fail(w, "selected by more than one PodDisruptionBudget");
    if (!mine.length) {
      if (min > 1 || autoscaled.has(d.metadata.name)) fail(w, "no PodDisruptionBudget");
      continue;
    }
    const p = mine[0].spec;
    if (p.minAvailable !== undefined && pct(p.minAvailable, min) >= min)
      fail(w, `PodDisruptionBudget minAvailable ${p.minAvailable} >= its ${min} replica(s): drains would block`);
    if (p.maxUnavailable !== undefined && pct(p.maxUnavailable, min) < 1 && !String(p.maxUnavailable).endsWith("%"))
      fail(w, "PodDisruptionBudget maxUnavailable 0 blocks drains");
  }
  // (pods of a RabbitmqCluster are made by its operator, labelled with its name)
  const operatorPods = byKind("RabbitmqCluster").map((c) => ({ "app.kubernetes.io/name": c.metadata.name }));
  for (const p of pdbs)
    if (!workloads.some((o) => selects(p.spec?.selector, podTemplate(o)?.metadata?.labels)) &&
        !operatorPods.some((l) => selects(p.spec?.selector, l)))
      fail(`${name}: ${idOf(p)}`, "selects no pods");

  // 5. Services select pods and name their ports.
  for (const s of byKind("Service")) {
    const w = `${name}: ${idOf(s)}`;
    const targets = workloads.filter((o) => selects({ matchLabels: s.spec?.selector }, podTemplate(o)?.metadata?.labels));
    if (!targets.length) {
      fail(w, "selects no pods");
      continue;
    }
    for (const port of s.spec?.ports ?? []) {
      const tp = port.targetPort ?? port.port;
      const ok = targets.some((o) => podTemplate(o).spec.containers.some((c) =>
        (c.ports ?? []).some((x) => x.name === tp || x.containerPort === tp)));
      if (!ok) fail(w, `targetPort ${tp} is not a container port of the selected pods`);
    }
  }

  // 6. Network policies: default deny both ways, every policy selects pods.
  const nps = byKind("NetworkPolicy");
  const deny = nps.find((n) => Object.keys(n.spec?.podSelector ?? {}).length === 0 && !n.spec.ingress && !n.spec.egress);
  // (renders without Deployments, such as the ops pod, join a namespace that has them)
  const deployments = byKind("Deployment").length > 0;
  if (deployments && !deny) fail(name, "no default-deny NetworkPolicy (empty podSelector, no rules)");
  else if (deny && !["Ingress", "Egress"].every((t) => deny.spec.policyTypes?.includes(t)))
    fail(`${name}: ${idOf(deny)}`, "default deny must cover Ingress and Egress");
  for (const n of nps) {
    const sel = n.spec?.podSelector ?? {};
    if (Object.keys(sel).length && !workloads.some((o) => selects(sel, podTemplate(o)?.metadata?.labels)))
      fail(`${name}: ${idOf(n)}`, "selects no pods");
  }
  if (deployments && !nps.some((n) => (n.spec.egress ?? []).some((e) => (e.ports ?? []).some((p) => p.port === 53))))
    fail(name, "no NetworkPolicy allows DNS egress");

  // 7. Namespaces enforce the restricted Pod Security Standard.
  for (const ns of byKind("Namespace"))
    if (ns.metadata?.labels?.["pod-security.kubernetes.io/enforce"] !== "restricted")
      fail(`${name}: ${idOf(ns)}`, "pod-security.kubernetes.io/enforce must be restricted");

  // 8. The RabbitMQ operator example.
  for (const c of byKind("RabbitmqCluster"))
    if (c.spec?.replicas !== 3) fail(`${name}: ${idOf(c)}`, "replicas must be 3 (quorum queues)");
  for (const p of byKind("Policy").filter((x) => x.apiVersion.startsWith("rabbitmq.com/"))) {
    const d = p.spec?.definition ?? {};
    const w = `${name}: ${idOf(p)}`;
    if (!new RegExp(p.spec?.pattern ?? "^$").test("dialer.dial-jobs")) fail(w, "pattern does not match dialer.dial-jobs");
    if (!(d["delivery-limit"] > 0)) fail(w, "definition.delivery-limit missing");
    if (d["dead-letter-exchange"] !== "dialer.dead-letter") fail(w, "dead-letter-exchange must be dialer.dead-letter");
  }

  // 9. Production.
  if (name === "prod") {
    for (const o of workloads)
      for (const c of podTemplate(o).spec.containers)
        if (/telephony-sim/.test(c.image ?? "")) fail(`${name}: ${idOf(o)}`, "the simulator must not run in prod");
    const sched = find("Deployment", "dialer-scheduler");
    if (!sched || (sched.spec.replicas ?? 1) < 2) fail(name, "dialer-scheduler needs 2 replicas");
    const so = find("ScaledObject", "dialer-worker");
    if (!so || so.spec.minReplicaCount < 2) fail(name, "the worker ScaledObject needs minReplicaCount >= 2");
    const hpa = find("HorizontalPodAutoscaler", "dialer-api");
    if (!hpa || (hpa.spec.minReplicas ?? 1) < 2) fail(name, "the API HPA needs minReplicas >= 2");
    for (const d of byKind("Deployment")) {
      const s = d.spec.template.spec;
      if (!s.topologySpreadConstraints?.length && !s.affinity?.podAntiAffinity)
        fail(`${name}: ${idOf(d)}`, "no topologySpreadConstraints or podAntiAffinity");
    }
    for (const s of byKind("Secret"))
      if (Object.values(s.data ?? {}).some((v) => /CHANGE_ME/.test(Buffer.from(v, "base64").toString())))
        fail(`${name}: ${idOf(s)}`, "placeholder credentials in prod");
  }

  // 10. Every `images:` entry of the kustomization takes effect.
  const kfile = opts.kustomization.find(([n]) => n === name)?.[1];
  if (kfile) {
    let k = {};
    try {
      k = parseAllDocuments(fs.readFileSync(kfile, "utf8"))[0]?.toJS() ?? {};
    } catch (e) {
      fail(name, `cannot read ${kfile}: ${e.message}`);
    }
    const images = workloads.flatMap((o) => [...(podTemplate(o).spec.initContainers ?? []), ...podTemplate(o).spec.containers])
      .map((c) => c.image ?? "");
    for (const im of k.images ?? []) {
      const want = (im.newName ?? im.name) + (im.digest ? `@${im.digest}` : im.newTag !== undefined ? `:${im.newTag}` : "");
      if (!images.some((x) => x === want || (!im.digest && im.newTag === undefined && x.startsWith(`${want}:`))))
        fail(`${name}: kustomization images`, `entry "${im.name}" changes no container image (no image is ${want}): ` +
          "name the image as the resources (or the base's images:) leave it");
    }
  }

  if (opts.binDir) checkConfig(name, objs, find, workloads);
}

// ------------------------------------------------- the services' own check
// Runs `<binary> --check-config` with the rendered dialer.conf and each
// container's environment, so a setting the services reject (unknown key,
// out-of-range value) fails here rather than in a CrashLoopBackOff.
function checkConfig(name, objs, find, workloads) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "dialer-cfg-"));
  try {
    for (const o of workloads) {
      const spec = podTemplate(o).spec;
      for (const c of spec.containers) {
        const bin = path.join(opts.binDir, c.name);
        if (!fs.existsSync(bin) || c.name === "dialerctl") continue;
        const cw = `${name}: ${idOf(o)} container ${c.name}`;
        const env = { PATH: process.env.PATH };
        let conf = null;
        for (const v of spec.volumes ?? []) {
          const srcs = v.configMap ? [{ configMap: v.configMap }] : (v.projected?.sources ?? []);
          for (const s of srcs) {
            const cm = s.configMap && find("ConfigMap", s.configMap.name);
            if (cm?.data?.["dialer.conf"] !== undefined) conf = cm.data["dialer.conf"];
          }
        }
        for (const ef of c.envFrom ?? []) {
          if (ef.configMapRef) Object.assign(env, find("ConfigMap", ef.configMapRef.name)?.data ?? {});
          if (ef.secretRef) {
            const s = find("Secret", ef.secretRef.name);
            for (const [k, v] of Object.entries(s?.data ?? {})) env[k] = Buffer.from(v, "base64").toString();
          }
        }
        for (const e of c.env ?? []) {
          if (e.value !== undefined) env[e.name] = e.value;
          const ref = e.valueFrom?.secretKeyRef;
          if (ref) {
            const s = find("Secret", ref.name);
            env[e.name] = s?.data?.[ref.key] !== undefined ? Buffer.from(s.data[ref.key], "base64").toString() : "external";
          }
        }
        const args = ["--check-config"];
        if (conf !== null) {
          const f = path.join(dir, `${o.metadata.name}-${c.name}.conf`);
          fs.writeFileSync(f, conf);
          env.DIALER_CONFIG = f;
          args.push("--config", f);
        } else {
          delete env.DIALER_CONFIG;
          fail(cw, "no dialer.conf mounted from a ConfigMap");
        }
        const r = spawnSync(bin, args, { env, encoding: "utf8", timeout: 10000 });
        if (r.status !== 0)
          fail(cw, `${c.name} --check-config rejects the rendered settings: ${(r.stderr || r.stdout || String(r.error)).trim().split("\n")[0]}`);
      }
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// -------------------------------------------------------------- Dockerfile
function parseDockerfile(text) {
  const out = [];
  let buf = "";
  let line0 = 0;
  text.split("\n").forEach((raw, i) => {
    const line = raw.replace(/\r$/, "");
    if (!buf && (/^\s*#/.test(line) || !line.trim())) return;
    if (buf && /^\s*#/.test(line)) return; // comments inside continuations
    if (!buf) line0 = i + 1;
    if (/\\\s*$/.test(line)) {
      buf += line.replace(/\\\s*$/, " ");
      return;
    }
    buf += line;
    const m = /^\s*(\w+)\s+([\s\S]*)$/.exec(buf);
    if (m) out.push({ cmd: m[1].toUpperCase(), args: m[2].trim(), line: line0 });
    buf = "";
  });
  return out;
}
const RUNTIME_PKGS = ["libmicrohttpd12", "libjansson4", "libpq5", "librabbitmq4", "libcurl4", "libconfig9",
  "libssl3", "ca-certificates"];
// What each image installs (binary -> packages), from the Dockerfile when
// it is checked, else the list above.
const installed = {};
const TARGETS = { api: "dialer-api", scheduler: "dialer-scheduler", worker: "dialer-worker", dialerctl: "dialerctl",
  "telephony-sim": "telephony-sim" };

function checkDockerfile(file) {
  const w = path.basename(file);
  let text;
  try {
    text = fs.readFileSync(file, "utf8");
  } catch (e) {
    fail(w, `cannot read: ${e.message}`);
    return null;
  }
  const ins = parseDockerfile(text);
  const stages = [];
  for (const i of ins) {
    if (i.cmd === "FROM") {
      const m = /^(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$/i.exec(i.args);
      if (!m) {
        fail(w, `line ${i.line}: cannot parse FROM ${i.args}`);
        continue;
      }
      stages.push({ base: m[1], name: (m[2] ?? `#${stages.length}`).toLowerCase(), ins: [], line: i.line });
    } else if (stages.length) {
      stages.at(-1).ins.push(i);
    } else if (i.cmd !== "ARG") {
      fail(w, `line ${i.line}: ${i.cmd} before FROM`);
    }
  }
  const byName = new Map(stages.map((s) => [s.name, s]));
  for (const s of stages) {
    if (byName.has(s.base.toLowerCase()) && byName.get(s.base.toLowerCase()) !== s) continue;
    const tag = imageTag(s.base);
    if (!tag) fail(w, `line ${s.line}: base image ${s.base} has no tag`);
    else if (tag === "latest") fail(w, `line ${s.line}: base image ${s.base} uses latest`);
    else if (!/^debian:bookworm-slim(@sha256:[0-9a-f]{64})?$/.test(s.base))
      fail(w, `line ${s.line}: base image ${s.base} is not debian:bookworm-slim`);
  }
  const chain = (s) => {
    const c = [];
    for (let x = s; x; x = byName.get(x.base.toLowerCase())) {
      if (c.includes(x)) break;
      c.unshift(x);
    }
    return c;
  };
  const exec = (args) => {
    try {
      const a = JSON.parse(args);
      return Array.isArray(a) && a.length > 0 && a.every((x) => typeof x === "string");
    } catch {
      return false;
    }
  };
  const buildStages = new Set();
  for (const s of stages)
    for (const i of s.ins) {
      const m = /--from=(\S+)/.exec(i.args);
      if (i.cmd === "COPY" && m) buildStages.add(m[1].toLowerCase());
    }
  for (const [target, bin] of Object.entries(TARGETS)) {
    const s = byName.get(target);
    if (!s) {
      fail(w, `no target ${target}`);
      continue;
    }
    const all = chain(s).flatMap((x) => x.ins);
    const last = (cmd) => all.filter((i) => i.cmd === cmd).at(-1);
    const user = last("USER");
    if (!user) fail(w, `${target}: runs as root (no USER)`);
    else if (!/^[1-9][0-9]*(:[1-9][0-9]*)?$/.test(user.args)) fail(w, `${target}: USER ${user.args} must be a numeric non-root uid`);
    const ep = last("ENTRYPOINT");
    if (!ep) fail(w, `${target}: no ENTRYPOINT`);
    else if (!exec(ep.args)) fail(w, `${target}: ENTRYPOINT must be exec form (a JSON array), is: ${ep.args}`);
    else if (!JSON.parse(ep.args)[0].endsWith(`/${bin}`)) fail(w, `${target}: ENTRYPOINT does not run ${bin}`);
    const cmd = last("CMD");
    if (cmd && !exec(cmd.args)) fail(w, `${target}: CMD must be exec form`);
    const envs = all.filter((i) => i.cmd === "ENV").map((i) => i.args).join(" ");
    if (!/DIALER_CONFIG=\/etc\/dialer\/dialer\.conf\b/.test(envs)) fail(w, `${target}: ENV DIALER_CONFIG=/etc/dialer/dialer.conf missing`);
    if (target !== "dialerctl" && !all.some((i) => i.cmd === "EXPOSE")) fail(w, `${target}: no EXPOSE`);
    if (!all.some((i) => i.cmd === "COPY" && /--from=/.test(i.args) && i.args.includes(bin)))
      fail(w, `${target}: does not copy ${bin} from the build stage`);
    // Runtime stages: runtime packages only, no compilers or headers.
    installed[bin] = [];
    for (const x of chain(s)) {
      if (buildStages.has(x.name)) fail(w, `${target}: is built on the build stage ${x.name}`);
      for (const i of x.ins.filter((y) => y.cmd === "RUN" && /apt-get\s+install/.test(y.args))) {
        const pkgs = i.args.split(/&&|;/).filter((p) => /apt-get\s+install/.test(p))
          .flatMap((p) => p.replace(/.*apt-get\s+install/, "").trim().split(/\s+/)).filter((p) => p && !p.startsWith("-"));
        installed[bin].push(...pkgs);
        for (const p of pkgs)
          if (!RUNTIME_PKGS.includes(p)) fail(w, `${target}: line ${i.line} installs ${p}, not a runtime package`);
      }
    }
  }
  for (const s of stages)
    for (const i of s.ins) {
      if (i.cmd === "ADD" && /https?:\/\//.test(i.args)) fail(w, `line ${i.line}: ADD of a URL`);
      if (i.cmd === "RUN" && /apt-get\s+install/.test(i.args)) {
        if (!/apt-get\s+install\s+(-\S+\s+)*-y|-y\b/.test(i.args)) fail(w, `line ${i.line}: apt-get install without -y`);
        if (!/--no-install-recommends/.test(i.args)) fail(w, `line ${i.line}: apt-get install without --no-install-recommends`);
        if (!/rm -rf \/var\/lib\/apt\/lists/.test(i.args)) fail(w, `line ${i.line}: apt lists not removed in the same layer`);
      }
    }
  return stages;
}

// The build context: every COPY source exists and .dockerignore keeps it.
function checkContext(stages, ignoreFile, repo) {
  const w = "docker context";
  const patterns = fs.readFileSync(ignoreFile, "utf8").split("\n").map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const toRe = (p) => new RegExp("^" + p.replace(/^\/+/, "").replace(/\/+$/, "").split("**").map((part) =>
    part.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, "[^/]*").replace(/\?/g, "[^/]")).join(".*") + "(/.*)?$");
  const ignored = (rel) => {
    let ign = false;
    for (const p of patterns) {
      const neg = p.startsWith("!");
      if (toRe(neg ? p.slice(1) : p).test(rel)) ign = !neg;
    }
    return ign;
  };
  for (const s of stages)
    for (const i of s.ins) {
      if (i.cmd !== "COPY" || /--from=/.test(i.args)) continue;
      const parts = i.args.split(/\s+/).filter((x) => !x.startsWith("--"));
      for (const src of parts.slice(0, -1)) {
        const rel = src.replace(/^\.\//, "").replace(/\/+$/, "");
        if (!fs.existsSync(path.join(repo, rel))) fail(w, `COPY ${src}: not in the repository`);
        else if (ignored(rel)) fail(w, `COPY ${src}: excluded by ${path.basename(ignoreFile)}`);
        else if (fs.statSync(path.join(repo, rel)).isDirectory()) {
          // Sources under a copied directory must survive the ignore file too.
          for (const f of fs.readdirSync(path.join(repo, rel), { recursive: true })) {
            const r = `${rel}/${f}`;
            if (/\.(c|h|sql|sh|yaml)$/.test(r) && !r.includes("node_modules") && ignored(r))
              fail(w, `${r}: needed by the build but excluded by ${path.basename(ignoreFile)}`);
          }
        }
      }
    }
  for (const must of ["build", ".run", ".git", "tests/openapi/node_modules", "tests/deploy/node_modules"])
    if (!ignored(must)) fail(w, `${must} is not excluded by ${path.basename(ignoreFile)}`);
}

// The binaries' shared libraries come from the runtime packages (or libc).
function checkLibraries(binDir) {
  const needed = new Map(); // library -> binaries
  for (const bin of Object.values(TARGETS)) {
    const f = path.join(binDir, bin);
    if (!fs.existsSync(f)) continue;
    const r = spawnSync("objdump", ["-p", f], { encoding: "utf8" });
    if (r.status !== 0) {
      notes.push(`objdump unavailable: shared libraries of ${bin} not checked`);
      return;
    }
    for (const [, lib] of r.stdout.matchAll(/^\s*NEEDED\s+(\S+)/gm)) needed.set(lib, [...(needed.get(lib) ?? []), bin]);
  }
  if (!needed.size) return;
  // One dpkg query for all of them: "pkg[, pkg]: /path/lib".
  const d = spawnSync("dpkg", ["-S", ...[...needed.keys()].map((l) => `*/${l}`)], { encoding: "utf8" });
  const owners = new Map();
  for (const line of (d.stdout ?? "").split("\n")) {
    const m = /^([^:]+(?::[a-z0-9]+)?(?:,\s*[^:]+)*):\s+(\S+)$/.exec(line);
    if (!m) continue;
    const lib = path.basename(m[2]);
    const pkgs = m[1].split(",").map((p) => p.trim().split(":")[0]);
    owners.set(lib, [...(owners.get(lib) ?? []), ...pkgs]);
  }
  for (const [lib, bins] of needed) {
    // A sanitizer build (make SAN=...) links the sanitizer runtimes; images are
    // built without them.
    if (/^lib(asan|ubsan|lsan|tsan)\.so/.test(lib)) {
      notes.push(`${lib}: a sanitizer build; its runtime is not an image dependency`);
      continue;
    }
    const pkgs = owners.get(lib);
    for (const bin of bins) {
      const have = installed[bin] ?? RUNTIME_PKGS;
      if (!pkgs) fail(`image ${bin}`, `${lib}: no Debian package provides it`);
      else if (!pkgs.some((p) => have.includes(p) || /^(libc6|libgcc-s1)$/.test(p)))
        fail(`image ${bin}`, `needs ${lib} (Debian package ${[...new Set(pkgs)].join(", ")}), which the image does not install`);
    }
  }
}

// -------------------------------------------------------------------- main
for (const [name, file] of opts.render) {
  const ext = opts.external.filter(([n]) => n === name).map(([, id]) => id);
  await checkRender(name, file, ext);
}
if (opts.dockerfile) {
  const stages = checkDockerfile(opts.dockerfile);
  if (stages && opts.dockerignore && opts.repo) checkContext(stages, opts.dockerignore, opts.repo);
}
if (opts.binDir) checkLibraries(opts.binDir);
for (const n of notes) console.log(`check: note: ${n}`);
for (const p of problems) console.log(`check: FAIL ${p}`);
if (problems.length) {
  console.log(`check: ${problems.length} problem(s)`);
  process.exit(1);
}
console.log(`check: ok (${opts.render.map(([n]) => n).join(", ") || "no renders"}${opts.dockerfile ? ", Dockerfile" : ""})`);
