//! A model lives on its own thread: the thread owns the model, requests
//! arrive through a channel, and each carries its own reply channel. No
//! lock is ever held across an await. Generation models decode concurrent
//! generations together (continuous batching, see [`LlmHandle`]); other
//! work runs between decoding steps.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

use tokio::sync::{mpsc as tokio_mpsc, oneshot};

use crate::Error;
use crate::engine::{
    Decoder, Engine, GenerateParams, Generation, GenerationEvent, LabelScore, LoadOptions, ModelInfo, Prompt,
    TokenEvent,
};

type Job<M> = Box<dyn FnOnce(&mut M) + Send>;

/// A worker thread owning a value of type `M`, fed by a channel.
#[derive(Debug)]
pub struct Actor<M> {
    tx: mpsc::Sender<Job<M>>,
    name: Arc<str>,
}

impl<M> Clone for Actor<M> {
    fn clone(&self) -> Self {
        Actor {
            tx: self.tx.clone(),
            name: self.name.clone(),
        }
    }
}

impl<M: 'static> Actor<M> {
    /// Starts the thread and builds the value on it with `init`; returns
    /// once `init` has finished, with its error if it failed. The thread
    /// ends when the last handle is dropped.
    pub fn spawn(
        name: &str,
        init: impl FnOnce() -> Result<M, Error> + Send + 'static,
    ) -> Result<Actor<M>, Error> {
        let (tx, rx) = mpsc::channel::<Job<M>>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || {
                let mut model = match init() {
                    Ok(m) => {
                        let _ = ready_tx.send(Ok(()));
                        m
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    // A panicking request fails alone (its caller sees the
                    // reply channel close); the model keeps serving the rest.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut model));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!(worker = %thread_name(), "a request panicked; the model keeps serving");
                    }
                }
            })
            .map_err(|e| Error::WorkerGone(format!("{name}: cannot start a thread: {e}")))?;
        ready_rx
            .recv()
            .map_err(|_| Error::WorkerGone(name.to_string()))??;
        Ok(Actor {
            tx,
            name: name.into(),
        })
    }

    /// Runs `f` on the worker thread after the requests queued before it.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut M) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (job, reply) = replying(f);
        self.tx
            .send(job)
            .map_err(|_| Error::WorkerGone(self.name.to_string()))?;
        reply.wait(&self.name).await
    }
}

/// The reply to a job made by [`replying`].
struct PendingReply<R>(oneshot::Receiver<Result<R, ()>>);

impl<R> PendingReply<R> {
    /// The job's result; a panic in it, or a worker that went away
    /// without running it, as the error that says so.
    async fn wait(self, worker: &str) -> Result<R, Error> {
        match self.0.await {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(())) => Err(Error::RequestPanicked(worker.to_string())),
            Err(_) => Err(Error::WorkerGone(worker.to_string())),
        }
    }
}

/// `f` as a job for a worker thread, which sends its result (or the news
/// that it panicked) back, and the reply to wait for.
fn replying<M, R: Send + 'static>(f: impl FnOnce(&mut M) -> R + Send + 'static) -> (Job<M>, PendingReply<R>) {
    let (reply, rx) = oneshot::channel();
    let job: Job<M> = Box::new(move |m: &mut M| {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(m)));
        let _ = reply.send(result.map_err(|_| ()));
    });
    (job, PendingReply(rx))
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("model").to_string()
}

/// An event of a streamed generation.
#[derive(Debug, Clone)]
pub enum StreamEvent {
    /// A token was generated.
    Token(TokenEvent),
    /// Text released at the end without a new token (held back as a
    /// possible stop sequence start, or an unfinished character).
    Text(String),
    /// Generation ended; the full result.
    Done(Box<Generation>),
    /// Generation failed.
    Failed(String),
}

/// Work for a generation model's thread.
enum LlmJob {
    /// A generation; it joins the batch of those in progress.
    Generate {
        prompt: Prompt,
        params: GenerateParams,
        reply: Reply,
    },
    /// Anything else (label scoring, tokenizing), run between decoding steps.
    Run(Job<Engine>),
}

/// A handle to a loaded generation model; cheap to clone and share.
///
/// The model's thread runs a continuous batch: generations join it
/// between decoding steps, every step decodes one token for each of them
/// in a single forward pass (each on its own KV cache), and a generation
/// leaves the batch as soon as it ends or its caller goes away. Other
/// requests run between steps.
#[derive(Debug, Clone)]
pub struct LlmHandle {
    tx: mpsc::Sender<LlmJob>,
    name: Arc<str>,
    info: Arc<ModelInfo>,
}

impl std::fmt::Debug for LlmJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LlmJob::Generate { .. } => "Generate",
            LlmJob::Run(_) => "Run",
        })
    }
}

impl LlmHandle {
    /// Loads a GGUF model on a new worker thread.
    pub fn load(path: &Path, options: LoadOptions) -> Result<LlmHandle, Error> {
        let p = path.to_path_buf();
        let name = path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let (tx, rx) = mpsc::channel::<LlmJob>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name(format!("model-{name}"))
            .spawn(move || match Engine::load(&p, &options) {
                Ok(engine) => {
                    let _ = ready_tx.send(Ok(engine.info().clone()));
                    serve(engine, &rx);
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|e| Error::WorkerGone(format!("{name}: cannot start a thread: {e}")))?;
        let info = ready_rx.recv().map_err(|_| Error::WorkerGone(name.clone()))??;
        Ok(LlmHandle {
            tx,
            name: name.into(),
            info: Arc::new(info),
        })
    }

    /// The process-wide instance of the model at `path`: loaded on first
    /// use, then shared by every caller (one copy of the weights in memory).
    pub fn shared(path: &Path) -> Result<LlmHandle, Error> {
        static LOADED: SharedHandles<LlmHandle> = OnceLock::new();
        shared_handle(&LOADED, path, |p| LlmHandle::load(p, LoadOptions::default()))
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Starts a generation and returns its events as they happen. Dropping
    /// the receiver cancels the generation at the next token.
    pub fn generate_stream(
        &self,
        prompt: Prompt,
        params: GenerateParams,
    ) -> tokio_mpsc::UnboundedReceiver<StreamEvent> {
        let (events, rx) = tokio_mpsc::unbounded_channel();
        let job = LlmJob::Generate {
            prompt,
            params,
            reply: Reply::Stream(events),
        };
        if let Err(mpsc::SendError(LlmJob::Generate { reply, .. })) = self.tx.send(job) {
            reply.fail(Error::WorkerGone(self.name.to_string()));
        }
        rx
    }

    /// Generates and returns the whole result.
    pub async fn generate(&self, prompt: Prompt, params: GenerateParams) -> Result<Generation, Error> {
        let (reply, rx) = oneshot::channel();
        let job = LlmJob::Generate {
            prompt,
            params,
            reply: Reply::Whole(reply),
        };
        self.tx
            .send(job)
            .map_err(|_| Error::WorkerGone(self.name.to_string()))?;
        rx.await.map_err(|_| Error::WorkerGone(self.name.to_string()))?
    }

    /// Log-likelihood of each candidate continuation after the prompt.
    pub async fn score(&self, prompt: Prompt, candidates: Vec<String>) -> Result<Vec<LabelScore>, Error> {
        self.with_engine(move |engine: &mut Engine| engine.score(&prompt, &candidates))
            .await?
    }

    /// The prompt's token ids (chat template applied for chats).
    pub async fn tokenize(&self, prompt: Prompt) -> Result<Vec<u32>, Error> {
        self.with_engine(move |engine: &mut Engine| engine.prompt_tokens(&prompt))
            .await?
    }

    /// Runs any function on the engine, between decoding steps.
    pub async fn with_engine<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Engine) -> R + Send + 'static,
    ) -> Result<R, Error> {
        let (job, reply) = replying(f);
        self.tx
            .send(LlmJob::Run(job))
            .map_err(|_| Error::WorkerGone(self.name.to_string()))?;
        reply.wait(&self.name).await
    }
}

/// Where a generation's outcome goes.
#[derive(Debug)]
enum Reply {
    /// Each event as it happens, then the result.
    Stream(tokio_mpsc::UnboundedSender<StreamEvent>),
    /// The result alone.
    Whole(oneshot::Sender<Result<Generation, Error>>),
}

impl Reply {
    /// Passes an event on; `false` when the caller has gone away (which
    /// cancels the generation).
    fn event(&self, event: GenerationEvent<'_>) -> bool {
        match self {
            Reply::Stream(events) => {
                let event = match event {
                    GenerationEvent::Token(t) => StreamEvent::Token(t.clone()),
                    GenerationEvent::Tail(text) => StreamEvent::Text(text.to_string()),
                };
                events.send(event).is_ok()
            }
            Reply::Whole(done) => !done.is_closed(),
        }
    }

    fn done(self, g: Generation) {
        match self {
            Reply::Stream(events) => {
                let _ = events.send(StreamEvent::Done(Box::new(g)));
            }
            Reply::Whole(done) => {
                let _ = done.send(Ok(g));
            }
        }
    }

    fn fail(self, e: Error) {
        match self {
            Reply::Stream(events) => {
                let _ = events.send(StreamEvent::Failed(e.to_string()));
            }
            Reply::Whole(done) => {
                let _ = done.send(Err(e));
            }
        }
    }
}

/// A generation in the batch, with where its outcome goes.
#[derive(Debug)]
struct Active {
    decoder: Decoder,
    reply: Reply,
}

/// The model thread's loop: admit work, then advance every generation by
/// one token in one forward pass. Ends when every handle is gone and the
/// batch is empty.
fn serve(mut engine: Engine, rx: &mpsc::Receiver<LlmJob>) {
    let mut active: Vec<Active> = Vec::new();
    loop {
        let mut jobs = Vec::new();
        if active.is_empty() {
            match rx.recv() {
                Ok(job) => jobs.push(job),
                Err(_) => return,
            }
        }
        jobs.extend(rx.try_iter());
        // Generations that arrive together run their prompts in one pass;
        // other work keeps its place in the queue.
        let mut arrivals = Vec::new();
        for job in jobs {
            match job {
                LlmJob::Generate {
                    prompt,
                    params,
                    reply,
                } => arrivals.push((prompt, params, reply)),
                // A panic fails this request alone (its caller sees it).
                LlmJob::Run(f) => {
                    admit(&mut engine, std::mem::take(&mut arrivals), &mut active);
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut engine)));
                }
            }
        }
        admit(&mut engine, arrivals, &mut active);
        let stepped =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(&mut engine, &mut active)));
        let failure = match stepped {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => {
                tracing::error!(worker = %thread_name(), "a decoding step panicked; the model keeps serving");
                Some(Error::RequestPanicked(thread_name()).to_string())
            }
        };
        // A failed step fails the generations in it; the model keeps serving.
        if let Some(message) = failure {
            for a in active.drain(..) {
                a.reply.fail(Error::InvalidRequest(message.clone()));
            }
        }
    }
}

/// Runs the prompts of newly arrived generations (in one forward pass)
/// and adds them to the batch; those that cannot start fail alone.
fn admit(engine: &mut Engine, arrivals: Vec<(Prompt, GenerateParams, Reply)>, active: &mut Vec<Active>) {
    if arrivals.is_empty() {
        return;
    }
    let requests: Vec<(&Prompt, &GenerateParams)> = arrivals.iter().map(|(p, g, _)| (p, g)).collect();
    let begun = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| engine.begin_batch(&requests)));
    drop(requests);
    match begun {
        Ok(results) => {
            for ((_, _, reply), result) in arrivals.into_iter().zip(results) {
                match result {
                    Ok(decoder) => active.push(Active { decoder, reply }),
                    Err(e) => reply.fail(e),
                }
            }
        }
        Err(_) => {
            tracing::error!(worker = %thread_name(), "starting generations panicked; the model keeps serving");
            for (_, _, reply) in arrivals {
                reply.fail(Error::RequestPanicked(thread_name()));
            }
        }
    }
}

/// Picks each generation's next token, hands the finished ones back, and
/// runs the rest's tokens in one forward pass.
fn step(engine: &mut Engine, active: &mut Vec<Active>) -> Result<(), Error> {
    let mut i = 0;
    while i < active.len() {
        let a = &mut active[i];
        let reply = &a.reply;
        match a.decoder.advance(engine.tokenizer(), &mut |e| reply.event(e)) {
            Ok(true) => i += 1,
            Ok(false) => {
                let a = active.swap_remove(i);
                let g = a.decoder.finish(&mut |e| a.reply.event(e));
                a.reply.done(g);
            }
            // A generation that cannot go on (its sampler failed) fails
            // alone; the others keep their places in the batch.
            Err(e) => active.swap_remove(i).reply.fail(e),
        }
    }
    let mut decoders: Vec<&mut Decoder> = active.iter_mut().map(|a| &mut a.decoder).collect();
    engine.step(&mut decoders)
}

/// Handles of models loaded once per process, by canonical path.
pub(crate) type SharedHandles<H> = OnceLock<Mutex<HashMap<PathBuf, H>>>;

/// The handle for the model at `path` in `loaded`, loading it with `load`
/// on first use. The lock is held while loading, so two callers never load
/// the same model twice; it is never held across an await.
pub(crate) fn shared_handle<H: Clone>(
    loaded: &SharedHandles<H>,
    path: &Path,
    load: impl FnOnce(&Path) -> Result<H, Error>,
) -> Result<H, Error> {
    let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    let mut loaded = loaded
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(h) = loaded.get(&key) {
        return Ok(h.clone());
    }
    let handle = load(&key)?;
    loaded.insert(key, handle.clone());
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_never_overlap() {
        // Each call sees a different number of earlier calls: none ran
        // alongside another.
        let actor = Actor::spawn("counter", || Ok(Vec::<usize>::new())).unwrap();
        let calls: Vec<_> = (0..20)
            .map(|i| {
                let a = actor.clone();
                tokio::spawn(async move {
                    a.call(move |log: &mut Vec<usize>| {
                        log.push(i);
                        log.len()
                    })
                    .await
                    .unwrap()
                })
            })
            .collect();
        let mut lens = Vec::new();
        for c in calls {
            lens.push(c.await.unwrap());
        }
        lens.sort_unstable();
        assert_eq!(lens, (1..=20).collect::<Vec<_>>());
    }

    #[test]
    fn a_failed_load_is_returned_not_hung() {
        let err = Actor::<()>::spawn("broken", || Err(Error::InvalidRequest("nope".into()))).unwrap_err();
        assert!(err.to_string().contains("nope"));
    }
}
