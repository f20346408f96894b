//! The scheduler: which waiting job goes to ComfyUI next, as pure functions.
//!
//! The daemon's owner loop calls [`pick`] whenever a slot at ComfyUI frees, with every job that
//! may run at that moment, whichever file it came from ("decide late", so model affinity sees
//! everything that is waiting), submits the job it names, and then calls [`record`] so that the
//! next decision knows about it. Nothing here reads a clock, touches a file or draws a random
//! number: time comes in as each candidate's `waited`, and the same inputs always give the same
//! answer, which is what lets the tests below drive whole traces of decisions.
//!
//! In [`Mode::Fair`] a decision goes, in this order:
//!
//! 1. **Aging.** A job that has waited at least its class's `max_wait` is overdue. The oldest
//!    overdue job goes first, whatever its class, priority or models.
//! 2. **Fair share between classes.** Otherwise the class with the lowest virtual time runs
//!    (stride scheduling): each job a class submits advances its virtual time by `1 / weight`,
//!    so classes that stay backlogged run jobs in proportion to their weights. A class that had
//!    nothing waiting re-enters at the current virtual time: idle time is not banked as credit.
//! 3. **Priority within the class.** The highest `priority`, then the lowest `seq`: this job is
//!    the class's *head of line*.
//! 4. **Model affinity.** Among the jobs of that top priority, one whose model set is the set
//!    ComfyUI was last given (or that uses no models) goes before the head of line, so ComfyUI
//!    does not swap models, until the head has been passed over for `affinity_bound`; then the
//!    head runs and its model set becomes the one to keep. When nothing waiting uses the last
//!    set, the head runs. Between classes affinity only breaks exact fair-share ties.
//!
//! The affinity bound is measured from the moment the head of line is first passed over, not
//! from its arrival: under a backlog older than the bound, arrival-based timing would turn
//! affinity off for good and make ComfyUI reload models on nearly every job exactly when it is
//! busiest. Aging still bounds every job's total wait.

use std::collections::BTreeMap;
use std::time::Duration;

/// `max_wait` of a class that `comfyd.toml` does not configure.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(60 * 60);

/// Default [`Policy::affinity_bound`].
pub const DEFAULT_AFFINITY_BOUND: Duration = Duration::from_secs(5 * 60);

/// Per-class settings (`[classes.NAME] weight = 4, max_wait = 600` in `comfyd.toml`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassPolicy {
    /// Share of ComfyUI's jobs while the class is backlogged, relative to the other classes'
    /// weights. A weight of 0 counts as 1: the scheduler never refuses a policy.
    pub weight: u32,
    /// How long a job of this class may wait before it is overdue and goes before every job
    /// that is not. Zero makes every job of the class overdue at once: oldest first.
    pub max_wait: Duration,
}

impl Default for ClassPolicy {
    fn default() -> Self {
        ClassPolicy {
            weight: 1,
            max_wait: DEFAULT_MAX_WAIT,
        }
    }
}

/// How decisions are made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Aging, weighted fair share, priority and model affinity (see the module docs).
    #[default]
    Fair,
    /// Strictly the lowest `seq` first: arrival order, the baseline benchmarks compare against.
    Fifo,
}

/// Everything the scheduler is configured with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Fair scheduling or plain arrival order.
    pub mode: Mode,
    /// The configured classes by name.
    pub classes: BTreeMap<String, ClassPolicy>,
    /// The settings of every class not in `classes`.
    pub default_class: ClassPolicy,
    /// The longest model affinity may hold back the job that would otherwise run next in its
    /// class. Zero turns affinity off.
    pub affinity_bound: Duration,
}

impl Policy {
    /// The settings of class `name`: its own, else `default_class`.
    pub fn class(&self, name: &str) -> &ClassPolicy {
        self.classes.get(name).unwrap_or(&self.default_class)
    }
}

/// A job that may run now, as the scheduler sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// The workflow's scheduling class.
    pub class: &'a str,
    /// Higher runs first within a class.
    pub priority: i64,
    /// How long the job has been eligible, on the daemon's monotonic clock.
    pub waited: Duration,
    /// A hash of the job's model set; 0 when it uses no models (it fits any loaded set).
    pub models: u64,
    /// Arrival order, lower is earlier; unique among candidates.
    pub seq: u64,
}

/// What the scheduler remembers between decisions: per-class virtual times, the head of line
/// affinity is holding back in each class, and the model set last submitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    classes: BTreeMap<String, ClassState>,
    /// The lowest virtual time of any backlogged class at the last decision; a class that had
    /// nothing waiting starts from here when it has work again.
    vtime: u128,
    last_models: u64,
}

impl State {
    /// The model set of the last job submitted that uses models; 0 before any.
    pub fn last_models(&self) -> u64 {
        self.last_models
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct ClassState {
    /// Virtual time after the class's last submitted job.
    pass: u128,
    /// The class's head of line while affinity passes it over.
    held: Option<Held>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Held {
    seq: u64,
    /// The head's `waited` when it was first passed over: how long it has been held back since
    /// is its `waited` now minus this, with no clock of our own.
    since: Duration,
}

/// Virtual time one job of weight 1 costs. Big enough that `SCALE / weight` stays exact for
/// small weights and nearly so for any `u32`; `u128` passes cannot overflow in practice.
const SCALE: u128 = 1 << 64;

fn stride(weight: u32) -> u128 {
    SCALE / u128::from(weight.max(1))
}

/// Picks the next job to submit: an index into `waiting`, or `None` when it is empty.
///
/// Allocates one small vector per call (an entry per class that has jobs waiting), nothing per
/// candidate; O(n × classes waiting).
#[must_use]
pub fn pick(policy: &Policy, state: &State, waiting: &[Candidate<'_>]) -> Option<usize> {
    if policy.mode == Mode::Fifo {
        return (0..waiting.len()).min_by_key(|&i| waiting[i].seq);
    }
    let survey = Survey::new(policy, state, waiting);
    if let Some(i) = survey.overdue {
        return Some(i);
    }
    let lowest = survey.lowest_pass()?;
    survey
        .classes
        .iter()
        .filter(|c| c.pass == lowest)
        .map(|c| c.choose(policy, state, waiting))
        // Exact ties between classes: a job that keeps the loaded models first, then arrival.
        .min_by_key(|&(i, keeps_models)| (!keeps_models, waiting[i].seq))
        .map(|(i, _)| i)
}

/// Records that `waiting[chosen]` was submitted: charges its class, moves the virtual time on,
/// notes whether affinity passed over its class's head of line, and remembers its model set.
///
/// `waiting` is the slice the decision was made on, the chosen job included; call this once per
/// submitted job, before the next [`pick`], in either [`Mode`] (so that switching modes keeps
/// the accounting). An index out of range changes nothing.
pub fn record(policy: &Policy, state: &mut State, waiting: &[Candidate<'_>], chosen: usize) {
    let Some(job) = waiting.get(chosen) else {
        return;
    };
    let survey = Survey::new(policy, state, waiting);
    let lowest = survey.lowest_pass().unwrap_or(state.vtime);
    let head = survey
        .classes
        .iter()
        .find(|c| c.name == job.class)
        .map(|c| waiting[c.head]);

    // The lowest virtual time among backlogged classes is the system's virtual time whichever
    // job was chosen (an overdue one may come from a class far ahead).
    state.vtime = state.vtime.max(lowest);
    if job.models != 0 {
        state.last_models = job.models;
    }
    let vtime = state.vtime;
    let class = match state.classes.get_mut(job.class) {
        Some(class) => class,
        None => state.classes.entry(job.class.to_owned()).or_default(),
    };
    class.pass = class
        .pass
        .max(vtime)
        .saturating_add(stride(policy.class(job.class).weight));
    class.held = match (head, class.held) {
        (Some(head), _) if head.seq == job.seq => None,
        // Still the same head and still eligible since the timer started: keep the timer.
        (Some(head), Some(held)) if held.seq == head.seq && held.since <= head.waited => Some(held),
        (Some(head), _) => Some(Held {
            seq: head.seq,
            since: head.waited,
        }),
        (None, _) => None,
    };
}

/// One pass over the candidates: the oldest overdue job and, per class waiting, what a
/// decision inside that class needs.
struct Survey<'a> {
    overdue: Option<usize>,
    classes: Vec<ClassView<'a>>,
}

/// A class with jobs waiting, as one decision sees it.
struct ClassView<'a> {
    name: &'a str,
    max_wait: Duration,
    /// Effective virtual time: the class's own, or the system's if it fell behind while idle.
    pass: u128,
    held: Option<Held>,
    top_priority: i64,
    /// Lowest `seq` at `top_priority`.
    head: usize,
    /// Lowest `seq` at `top_priority` among jobs that keep the loaded models.
    keeps_models: Option<usize>,
}

impl<'a> Survey<'a> {
    fn new(policy: &Policy, state: &State, waiting: &[Candidate<'a>]) -> Survey<'a> {
        let mut survey = Survey {
            overdue: None,
            classes: Vec::new(),
        };
        let mut last = 0;
        for (i, job) in waiting.iter().enumerate() {
            // Jobs of one class usually come together: try the previous class first.
            let at = match survey.classes.get(last) {
                Some(c) if c.name == job.class => last,
                _ => match survey.classes.iter().position(|c| c.name == job.class) {
                    Some(at) => at,
                    None => {
                        let own = state.classes.get(job.class);
                        survey.classes.push(ClassView {
                            name: job.class,
                            max_wait: policy.class(job.class).max_wait,
                            pass: own.map_or(0, |c| c.pass).max(state.vtime),
                            held: own.and_then(|c| c.held),
                            top_priority: job.priority,
                            head: i,
                            keeps_models: None,
                        });
                        survey.classes.len() - 1
                    }
                },
            };
            last = at;
            let class = &mut survey.classes[at];
            if job.waited >= class.max_wait {
                let older = survey.overdue.is_none_or(|o| {
                    let o = &waiting[o];
                    (job.waited, std::cmp::Reverse(job.seq)) > (o.waited, std::cmp::Reverse(o.seq))
                });
                if older {
                    survey.overdue = Some(i);
                }
            }
            class.observe(i, job, waiting, state.last_models);
        }
        survey
    }

    fn lowest_pass(&self) -> Option<u128> {
        self.classes.iter().map(|c| c.pass).min()
    }
}

impl ClassView<'_> {
    fn observe(&mut self, i: usize, job: &Candidate<'_>, waiting: &[Candidate<'_>], last: u64) {
        let keeps = keeps_models(job, last);
        if job.priority > self.top_priority {
            self.top_priority = job.priority;
            self.head = i;
            self.keeps_models = keeps.then_some(i);
            return;
        }
        if job.priority < self.top_priority {
            return;
        }
        if job.seq < waiting[self.head].seq {
            self.head = i;
        }
        if keeps && self.keeps_models.is_none_or(|k| job.seq < waiting[k].seq) {
            self.keeps_models = Some(i);
        }
    }

    /// The job this class would run, and whether it keeps the loaded models.
    fn choose(&self, policy: &Policy, state: &State, waiting: &[Candidate<'_>]) -> (usize, bool) {
        let head = &waiting[self.head];
        if keeps_models(head, state.last_models) {
            return (self.head, true);
        }
        let held_long_enough = policy.affinity_bound.is_zero()
            || self.held.is_some_and(|h| {
                h.seq == head.seq && head.waited.saturating_sub(h.since) >= policy.affinity_bound
            });
        match self.keeps_models {
            Some(k) if !held_long_enough => (k, true),
            _ => (self.head, false),
        }
    }
}

/// Whether running `job` next leaves ComfyUI's loaded models as they are.
fn keeps_models(job: &Candidate<'_>, last: u64) -> bool {
    job.models == 0 || job.models == last
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn policy(classes: &[(&str, u32, Duration)]) -> Policy {
        Policy {
            mode: Mode::Fair,
            classes: classes
                .iter()
                .map(|&(name, weight, max_wait)| {
                    (name.to_owned(), ClassPolicy { weight, max_wait })
                })
                .collect(),
            default_class: ClassPolicy::default(),
            affinity_bound: HOUR,
        }
    }

    fn job(class: &str, priority: i64, waited_ms: u64, models: u64, seq: u64) -> Candidate<'_> {
        Candidate {
            class,
            priority,
            waited: Duration::from_millis(waited_ms),
            models,
            seq,
        }
    }

    /// The `seq` of the job `pick` chooses.
    fn pick_seq(policy: &Policy, state: &State, waiting: &[Candidate<'_>]) -> Option<u64> {
        pick(policy, state, waiting).map(|i| waiting[i].seq)
    }

    /// A job of a simulated trace.
    #[derive(Clone, Copy, Debug)]
    struct Job {
        class: &'static str,
        priority: i64,
        models: u64,
        /// Milliseconds.
        arrive: u64,
        /// Milliseconds of execution, model loading aside.
        run: u64,
    }

    impl Job {
        fn new(class: &'static str, models: u64, arrive: u64, run: u64) -> Job {
            Job {
                class,
                priority: 0,
                models,
                arrive,
                run,
            }
        }
    }

    /// One job started in a trace.
    #[derive(Clone, Copy, Debug)]
    struct Started {
        job: usize,
        start: u64,
        wait: u64,
        /// ComfyUI had to load a model set for it.
        load: bool,
    }

    /// Drives the scheduler the way the owner loop will: one slot at ComfyUI, a decision each
    /// time it frees, with every job that has arrived by then. A model switch costs `load` ms.
    fn simulate(policy: &Policy, jobs: &[Job], load: u64) -> Vec<Started> {
        let mut arrivals: Vec<usize> = (0..jobs.len()).collect();
        arrivals.sort_by_key(|&i| (jobs[i].arrive, i));
        // `seq` is arrival order, as the daemon numbers jobs.
        let mut seq = vec![0; jobs.len()];
        for (rank, &i) in arrivals.iter().enumerate() {
            seq[i] = rank as u64;
        }
        let mut arrivals = arrivals.into_iter().peekable();
        let mut state = State::default();
        let mut waiting: Vec<usize> = Vec::new();
        let mut started = Vec::with_capacity(jobs.len());
        let (mut now, mut loaded) = (0, 0);
        while started.len() < jobs.len() {
            while let Some(&i) = arrivals.peek().filter(|&&i| jobs[i].arrive <= now) {
                waiting.push(i);
                arrivals.next();
            }
            if waiting.is_empty() {
                now = arrivals.peek().map_or(now, |&i| jobs[i].arrive);
                continue;
            }
            let candidates: Vec<Candidate<'_>> = waiting
                .iter()
                .map(|&i| Candidate {
                    class: jobs[i].class,
                    priority: jobs[i].priority,
                    waited: Duration::from_millis(now - jobs[i].arrive),
                    models: jobs[i].models,
                    seq: seq[i],
                })
                .collect();
            let k = pick(policy, &state, &candidates)
                .unwrap_or_else(|| panic!("no pick among {} waiting", candidates.len()));
            record(policy, &mut state, &candidates, k);
            let i = waiting.swap_remove(k);
            let load_now = jobs[i].models != 0 && jobs[i].models != loaded;
            if load_now {
                loaded = jobs[i].models;
            }
            started.push(Started {
                job: i,
                start: now,
                wait: now - jobs[i].arrive,
                load: load_now,
            });
            now += jobs[i].run + if load_now { load } else { 0 };
        }
        started
    }

    fn loads(started: &[Started]) -> usize {
        started.iter().filter(|s| s.load).count()
    }

    /// `n` jobs over `sets` model sets (1..=sets) in a seeded random order.
    fn shuffled_models(n: usize, sets: u64, seed: u64) -> Vec<u64> {
        let mut models: Vec<u64> = (0..n as u64).map(|i| i % sets + 1).collect();
        fastrand::Rng::with_seed(seed).shuffle(&mut models);
        models
    }

    #[test]
    fn nothing_waiting_picks_nothing() {
        let mut p = policy(&[]);
        assert_eq!(pick(&p, &State::default(), &[]), None);
        p.mode = Mode::Fifo;
        assert_eq!(pick(&p, &State::default(), &[]), None);
        let mut state = State::default();
        record(&p, &mut state, &[], 0);
        assert_eq!(state, State::default());
    }

    #[test]
    fn fifo_takes_the_lowest_seq_whatever_else() {
        let mut p = policy(&[("video", 1, Duration::ZERO), ("image", 100, HOUR)]);
        p.mode = Mode::Fifo;
        let mut state = State::default();
        let a = [job("image", 0, 0, 1, 0)];
        record(&p, &mut state, &a, 0);
        let waiting = [
            job("image", 9, 5, 1, 7),
            job("video", 0, 90_000, 2, 4),
            job("image", 0, 1, 1, 3),
            job("video", -5, 0, 3, 8),
        ];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(3));
    }

    #[test]
    fn priority_first_then_arrival_within_a_class() {
        let p = policy(&[]);
        let state = State::default();
        let waiting = [
            job("image", 0, 50, 0, 1),
            job("image", 5, 10, 0, 9),
            job("image", 5, 20, 0, 6),
            job("image", -1, 99, 0, 0),
        ];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(6));
        let waiting = [job("image", 0, 50, 0, 4), job("image", 0, 60, 0, 2)];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(2));
    }

    #[test]
    fn backlogged_classes_share_by_weight_exactly() {
        let p = policy(&[("image", 4, HOUR), ("video", 1, HOUR)]);
        let jobs: Vec<Job> = (0..2000)
            .map(|i| Job::new(if i % 2 == 0 { "image" } else { "video" }, 0, 0, 10))
            .collect();
        let started = simulate(&p, &jobs, 0);
        let (mut image, mut video) = (0i64, 0i64);
        // Both stay backlogged for the first 1250 jobs (1000 image + 250 video).
        for s in &started[..1250] {
            match jobs[s.job].class {
                "image" => image += 1,
                _ => video += 1,
            }
            assert!(
                (image - 4 * video).abs() <= 4,
                "image {image}, video {video} after {} jobs",
                image + video
            );
        }
        assert_eq!((image, video), (1000, 250));
    }

    #[test]
    fn three_classes_share_by_weight() {
        let p = policy(&[("a", 3, HOUR), ("b", 2, HOUR), ("c", 1, HOUR)]);
        let classes = ["a", "b", "c"];
        let jobs: Vec<Job> = (0..3000)
            .map(|i| Job::new(classes[i % 3], 0, 0, 10))
            .collect();
        let started = simulate(&p, &jobs, 0);
        let count = |class: &str| {
            started[..600]
                .iter()
                .filter(|s| jobs[s.job].class == class)
                .count()
        };
        assert_eq!((count("a"), count("b"), count("c")), (300, 200, 100));
    }

    #[test]
    fn an_idle_class_banks_no_credit() {
        let p = policy(&[("image", 4, HOUR), ("video", 1, HOUR)]);
        // Image runs alone for 1 s (100 jobs), then video work arrives while image is still
        // backlogged: video gets its 1 in 5, not a run of catch-up jobs.
        let mut jobs: Vec<Job> = (0..400).map(|_| Job::new("image", 0, 0, 10)).collect();
        jobs.extend((0..100).map(|_| Job::new("video", 0, 1000, 10)));
        let started = simulate(&p, &jobs, 0);
        let after: Vec<&str> = started
            .iter()
            .filter(|s| s.start >= 1000)
            .take(50)
            .map(|s| jobs[s.job].class)
            .collect();
        let video = after.iter().filter(|&&c| c == "video").count();
        assert!(
            (9..=11).contains(&video),
            "{video} video jobs in 50: {after:?}"
        );
        let in_a_row = after
            .windows(2)
            .filter(|w| w == &["video", "video"])
            .count();
        assert_eq!(in_a_row, 0, "{after:?}");
    }

    #[test]
    fn unknown_classes_use_the_default_and_weight_zero_counts_as_one() {
        let mut p = policy(&[("zero", 0, HOUR)]);
        p.default_class = ClassPolicy {
            weight: 1,
            max_wait: Duration::from_secs(10),
        };
        let jobs: Vec<Job> = (0..200)
            .map(|i| Job::new(if i % 2 == 0 { "zero" } else { "other" }, 0, 0, 10))
            .collect();
        let started = simulate(&p, &jobs, 0);
        let zero = started[..100]
            .iter()
            .filter(|s| jobs[s.job].class == "zero")
            .count();
        assert_eq!(zero, 50);
        // `other` is unconfigured: the default's 10 s `max_wait` makes its job overdue.
        let waiting = [job("zero", 9, 9_000, 0, 0), job("other", 0, 10_000, 0, 1)];
        assert_eq!(pick_seq(&p, &State::default(), &waiting), Some(1));
    }

    #[test]
    fn overdue_jobs_go_first_oldest_first_across_classes() {
        let p = policy(&[
            ("image", 100, Duration::from_secs(60)),
            ("video", 1, Duration::from_secs(10)),
        ]);
        let mut state = State::default();
        // Video far behind in fair share terms after many video jobs.
        for seq in 0..50 {
            record(&p, &mut state, &[job("video", 0, 0, 0, seq)], 0);
        }
        let waiting = [
            job("image", 10, 70_000, 1, 100),
            job("video", 0, 15_000, 2, 101),
            job("image", 0, 80_000, 1, 102),
            job("image", 0, 1_000, 1, 103),
        ];
        // Both image jobs and the video job are overdue; the one waiting longest goes.
        assert_eq!(pick_seq(&p, &state, &waiting), Some(102));
        // Equal waits: arrival order.
        let waiting = [job("video", 0, 80_000, 2, 9), job("image", 0, 80_000, 1, 8)];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(8));
        // Nothing overdue: fair share (video is behind) wins over waiting longest.
        let waiting = [job("video", 0, 9_000, 2, 5), job("image", 0, 50_000, 1, 6)];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(6));
    }

    /// Image floods ComfyUI at weight 100; video, weight 1, must still start within its 60 s
    /// bound plus the one job that was running when it became overdue.
    #[test]
    fn aging_bounds_a_starved_class_under_a_flood() {
        let image_run = 2_000;
        let video_run = 30_000;
        let mut jobs: Vec<Job> = (0..2000)
            .map(|_| Job::new("image", 1, 0, image_run))
            .collect();
        jobs.extend((0..30).map(|i| Job::new("video", 2, 5_000 + i * 100_000, video_run)));
        let worst_video = |max_wait: Duration| {
            let p = policy(&[("image", 100, HOUR), ("video", 1, max_wait)]);
            simulate(&p, &jobs, 0)
                .iter()
                .filter(|s| jobs[s.job].class == "video")
                .map(|s| s.wait)
                .max()
                .unwrap_or(0)
        };
        let bounded = worst_video(Duration::from_secs(60));
        assert!(
            bounded <= 60_000 + video_run,
            "a video job waited {bounded} ms"
        );
        // Without aging the same trace starves video far past the bound.
        let unbounded = worst_video(Duration::from_secs(100_000));
        assert!(
            unbounded > 120_000,
            "worst video wait without aging {unbounded} ms"
        );
    }

    #[test]
    fn a_shuffled_backlog_loads_each_model_set_once() {
        let p = policy(&[]);
        for seed in 0..5 {
            let jobs: Vec<Job> = shuffled_models(300, 3, seed)
                .into_iter()
                .map(|m| Job::new("image", m, 0, 70))
                .collect();
            let started = simulate(&p, &jobs, 2_000);
            assert_eq!(loads(&started), 3, "seed {seed}");
            let mut fifo = p.clone();
            fifo.mode = Mode::Fifo;
            let fifo_loads = loads(&simulate(&fifo, &jobs, 2_000));
            assert!(
                fifo_loads > 150,
                "seed {seed}: fifo loaded {fifo_loads} times"
            );
        }
    }

    #[test]
    fn trickling_arrivals_load_a_bounded_number_of_times() {
        let p = policy(&[]);
        for seed in 0..5 {
            let jobs: Vec<Job> = shuffled_models(300, 3, seed)
                .into_iter()
                .enumerate()
                .map(|(i, m)| Job::new("image", m, i as u64 * 50, 70))
                .collect();
            let started = simulate(&p, &jobs, 2_000);
            let mut fifo = p.clone();
            fifo.mode = Mode::Fifo;
            let fifo_loads = loads(&simulate(&fifo, &jobs, 2_000));
            assert!(
                loads(&started) <= 6,
                "seed {seed}: {} loads (fifo {fifo_loads})",
                loads(&started)
            );
            assert!(
                fifo_loads > 150,
                "seed {seed}: fifo loaded {fifo_loads} times"
            );
        }
    }

    /// A stream of jobs on model set 1 keeps ComfyUI busy; a job on another set arriving in it
    /// is held back by affinity, but for no longer than the bound plus one job's run.
    #[test]
    fn affinity_never_holds_another_model_set_past_the_bound() {
        let run = 100;
        let mut jobs: Vec<Job> = (0..600)
            .map(|i| Job::new("image", 1, i * run, run))
            .collect();
        let others: Vec<usize> = (0..5)
            .map(|i| {
                jobs.push(Job::new("image", 2 + i, 5_050 + i * 10_000, run));
                jobs.len() - 1
            })
            .collect();
        let waits = |bound: Duration| {
            let mut p = policy(&[]);
            p.affinity_bound = bound;
            let started = simulate(&p, &jobs, 0);
            others
                .iter()
                .map(|&o| {
                    started
                        .iter()
                        .find(|s| s.job == o)
                        .map(|s| s.wait)
                        .unwrap_or_else(|| panic!("job {o} never ran"))
                })
                .collect::<Vec<u64>>()
        };
        // A zero bound turns affinity off: arrival order, behind at most the jobs each earlier
        // arrival pushed back.
        let plain = waits(Duration::ZERO);
        assert!(plain.iter().all(|&w| w <= 5 * run), "{plain:?}");
        let held = waits(Duration::from_secs(2));
        for (k, (&h, &p)) in held.iter().zip(&plain).enumerate() {
            let extra = h - p.min(h);
            // Held back (the test would not notice a broken affinity otherwise), not for longer.
            assert!(
                (2_000 - run..=2_000 + run).contains(&extra),
                "job {k}: waited {h} ms with affinity, {p} ms without"
            );
        }
    }

    #[test]
    fn affinity_switches_to_the_head_of_line_when_the_last_set_is_gone() {
        let p = policy(&[]);
        let mut state = State::default();
        record(&p, &mut state, &[job("image", 0, 0, 1, 0)], 0);
        assert_eq!(state.last_models(), 1);
        let waiting = [
            job("image", 0, 0, 3, 5),
            job("image", 0, 0, 2, 3),
            job("image", 0, 0, 3, 4),
        ];
        let i = pick(&p, &state, &waiting).unwrap_or_else(|| panic!("no pick"));
        assert_eq!(waiting[i].seq, 3);
        record(&p, &mut state, &waiting, i);
        assert_eq!(state.last_models(), 2);
        // A job that uses no models fits whatever is loaded, and does not change it.
        let waiting = [job("image", 0, 0, 3, 4), job("image", 0, 0, 0, 6)];
        let i = pick(&p, &state, &waiting).unwrap_or_else(|| panic!("no pick"));
        assert_eq!(waiting[i].seq, 6);
        record(&p, &mut state, &waiting, i);
        assert_eq!(state.last_models(), 2);
    }

    #[test]
    fn priority_wins_over_affinity() {
        let p = policy(&[]);
        let mut state = State::default();
        record(&p, &mut state, &[job("image", 0, 0, 1, 0)], 0);
        let waiting = [job("image", 0, 0, 1, 1), job("image", 1, 0, 2, 2)];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(2));
        let waiting = [job("image", 0, 0, 2, 1), job("image", 0, 0, 1, 2)];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(2));
    }

    #[test]
    fn affinity_breaks_exact_ties_between_classes_only() {
        let p = policy(&[("a", 1, HOUR), ("b", 1, HOUR)]);
        let mut state = State::default();
        record(&p, &mut state, &[job("c", 0, 0, 7, 0)], 0);
        // `a` and `b` tie: b's job keeps model set 7 loaded and goes first though it came later.
        let waiting = [job("a", 0, 0, 1, 1), job("b", 0, 0, 7, 2)];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(2));
        record(&p, &mut state, &waiting, 1);
        // Now `a` is behind: fair share beats affinity.
        let waiting = [job("a", 0, 0, 1, 1), job("b", 0, 0, 7, 3)];
        assert_eq!(pick_seq(&p, &state, &waiting), Some(1));
    }

    #[test]
    fn decisions_do_not_depend_on_the_order_of_waiting() {
        let p = policy(&[
            ("a", 3, Duration::from_secs(5)),
            ("b", 1, Duration::from_secs(20)),
        ]);
        let mut rng = fastrand::Rng::with_seed(7);
        let mut state = State::default();
        let classes = ["a", "b", "c"];
        for round in 0..500u64 {
            let mut waiting: Vec<Candidate<'_>> = (0..rng.usize(1..12))
                .map(|k| Candidate {
                    class: classes[rng.usize(..3)],
                    priority: rng.i64(0..3),
                    waited: Duration::from_millis(rng.u64(0..30_000)),
                    models: rng.u64(0..4),
                    seq: round * 100 + k as u64,
                })
                .collect();
            let first = pick(&p, &state, &waiting).map(|i| waiting[i].seq);
            let mut recorded = state.clone();
            if let Some(i) = pick(&p, &state, &waiting) {
                record(&p, &mut recorded, &waiting, i);
            }
            rng.shuffle(&mut waiting);
            let second = pick(&p, &state, &waiting);
            assert_eq!(first, second.map(|i| waiting[i].seq), "round {round}");
            let mut again = state.clone();
            if let Some(i) = second {
                record(&p, &mut again, &waiting, i);
            }
            assert_eq!(recorded, again, "round {round}");
            state = again;
        }
    }
}
