import XCTest
@testable import Training

/// The scheduler driven by hand with a fake clock: every failure path, no sockets.
final class StepSchedulerTests: XCTestCase {
    private func scheduler(minimum: Int = 1, workers: Int, speculation: Bool = false) -> StepScheduler {
        var settings = SchedulerSettings()
        settings.minimumWorkers = minimum
        settings.workerTimeoutSeconds = 5
        settings.heartbeatSeconds = 1
        settings.noWorkersTimeoutSeconds = 60
        settings.waitReportSeconds = 10
        settings.speculation.isEnabled = speculation
        var scheduler = StepScheduler(settings: settings)
        for id in 0..<workers { _ = scheduler.handle(.workerJoined(id), now: 0) }
        return scheduler
    }

    /// Two workers, speculation on, and four quick steps (eight shard times of 10 ms) that
    /// teach the scheduler what a shard takes; returns it and the time after them.
    private func taughtScheduler() -> (StepScheduler, Double) {
        var s = scheduler(workers: 2, speculation: true)
        var now = 0.0
        for step in 0..<4 {
            _ = s.handle(.stepStarted(step: step, shards: [0, 1]), now: now)
            now += 0.01
            _ = s.handle(.resultAccepted(0, shard: 0), now: now)
            _ = s.handle(.resultAccepted(1, shard: 1), now: now)
        }
        return (s, now)
    }

    private func tasks(_ commands: [SchedulerCommand]) -> [WorkerID: [Int]] {
        var byWorker: [WorkerID: [Int]] = [:]
        for case let .sendTask(id, _, shard, _) in commands { byWorker[id, default: []].append(shard) }
        return byWorker
    }

    private func lost(_ commands: [SchedulerCommand]) -> [WorkerID] {
        commands.compactMap { if case let .declareLost(id, _) = $0 { id } else { nil } }
    }

    /// A parameter service's rollback abandons the step in flight: its deadlines pass with
    /// nobody lost (the workers, heard from, rightly ignore it), and the replayed step, though the workers
    /// had its weights before, sends them weights and tasks again.
    func testAnAbandonedStepLosesNobodyAndItsReplaySendsWeightsAgain() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 7, shards: [0, 1]), now: 0)
        _ = s.handle(.resultAccepted(0, shard: 0), now: 1)
        _ = s.handle(.stepAbandoned, now: 1)
        XCTAssertTrue(s.openShards.isEmpty)
        for now in stride(from: 2.0, through: 60, by: 1) { XCTAssertEqual(lost(heartbeatsAndTick(&s, now: now)), [], "at \(now) s") }
        XCTAssertEqual(s.liveWorkers, [0, 1])
        let replay = s.handle(.stepStarted(step: 7, shards: [0, 1]), now: 61)
        let weighted = replay.compactMap { if case let .sendWeights(id, step) = $0 { step == 7 ? id : nil } else { nil } }
        XCTAssertEqual(weighted.sorted(), [0, 1])
        XCTAssertEqual(tasks(replay), [0: [0], 1: [1]])
        // Without the abandon, the same silence loses both workers.
        var kept = scheduler(workers: 2)
        _ = kept.handle(.stepStarted(step: 7, shards: [0, 1]), now: 0)
        let unanswered = stride(from: 1.0, through: 60, by: 1).flatMap { lost(heartbeatsAndTick(&kept, now: $0)) }
        XCTAssertEqual(Set(unanswered), [0, 1])
    }

    /// Both workers' heartbeats, then a tick: what the tick commands.
    private func heartbeatsAndTick(_ s: inout StepScheduler, now: Double) -> [SchedulerCommand] {
        for id in [0, 1] { _ = s.handle(.workerHeard(id, answeredTask: false), now: now) }
        return s.handle(.tick, now: now)
    }

    /// Hosts with K slots take K consecutive shards each, an aligned block, and the next
    /// step's tasks go ahead the same way; a lost host's block goes to the others shard by
    /// shard, and a block is accepted only while every shard of it is still its own.
    func testHostsWithSlotsTakeAlignedBlocks() {
        var s = scheduler(workers: 0)
        _ = s.handle(.workerJoined(0, slots: 2), now: 0)
        _ = s.handle(.workerJoined(1, slots: 2), now: 0)
        _ = s.handle(.workerJoined(2), now: 0)
        // Shard 5 goes in the next round, to the first host, alone (no block then).
        XCTAssertEqual(tasks(s.handle(.stepStarted(step: 0, shards: [0, 1, 2, 3, 4, 5]), now: 0)),
                       [0: [0, 1, 5], 1: [2, 3], 2: [4]])
        XCTAssertEqual(s.verdict(from: 1, step: 0, shards: 2..<4, shardCount: 6), .accept)
        XCTAssertEqual(s.verdict(from: 1, step: 0, shards: 0..<2, shardCount: 6),
                       .reject(reason: "result for shard 0 of step 0, which it was not given"))
        _ = s.handle(.resultAccepted(2, shard: 4), now: 0.1)
        // Host 1 is lost: its shards 2 and 3 go to whoever has fewest, one by one.
        let commands = s.handle(.linkFailed(1, reason: "gone"), now: 0.2)
        XCTAssertEqual(tasks(commands).values.flatMap { $0 }.sorted(), [2, 3])
        _ = s.handle(.resultAccepted(2, shard: 2), now: 0.3)
        XCTAssertEqual(s.verdict(from: 0, step: 0, shards: 0..<2, shardCount: 6), .accept)
        XCTAssertEqual(s.verdict(from: 1, step: 0, shards: 2..<4, shardCount: 6), .stale)
        XCTAssertEqual(tasks(s.handle(.nextStepReady(step: 1, shards: [0, 1, 2, 3]), now: 0.4)), [0: [0, 1, 3], 2: [2]])
    }

    func testShardsGoByPositionWithWeightsFirst() {
        var s = scheduler(workers: 3)
        let commands = s.handle(.stepStarted(step: 0, shards: [0, 1, 2, 3]), now: 0)
        XCTAssertEqual(commands, [
            .sendWeights(0, step: 0), .sendTask(0, step: 0, shard: 0, reason: .assigned),
            .sendWeights(1, step: 0), .sendTask(1, step: 0, shard: 1, reason: .assigned),
            .sendWeights(2, step: 0), .sendTask(2, step: 0, shard: 2, reason: .assigned),
            .sendTask(0, step: 0, shard: 3, reason: .assigned),
        ])
        XCTAssertEqual(s.workers[0]?.outstanding, [0, 3])
    }

    func testPrefetchedTasksAreNotSentAgain() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 0, shards: [0, 1]), now: 0)
        let ahead = s.handle(.nextStepReady(step: 1, shards: [0, 1]), now: 0.001)
        XCTAssertEqual(tasks(ahead), [0: [0], 1: [1]])
        XCTAssertTrue(ahead.allSatisfy { if case .sendTask(_, 1, _, .prefetched) = $0 { true } else { false } })
        _ = s.handle(.resultAccepted(0, shard: 0), now: 0.002)
        _ = s.handle(.resultAccepted(1, shard: 1), now: 0.002)
        XCTAssertEqual(s.handle(.stepStarted(step: 1, shards: [0, 1]), now: 0.003), [.sendWeights(0, step: 1), .sendWeights(1, step: 1)])
    }

    func testMissedDeadlineLosesTheWorkerAndItsShardsMove() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 0, shards: [0, 1]), now: 0)
        _ = s.handle(.workerHeard(0, answeredTask: true), now: 0.5)
        _ = s.handle(.resultAccepted(0, shard: 0), now: 0.5)
        // Heartbeats from worker 1 do not save it: it sits on its shard.
        _ = s.handle(.workerHeard(1, answeredTask: false), now: 4.9)
        let commands = s.handle(.tick, now: 5.2)
        XCTAssertEqual(lost(commands), [1])
        guard case let .declareLost(_, reason) = commands.first(where: { if case .declareLost = $0 { true } else { false } }) else { return XCTFail() }
        XCTAssertTrue(reason.contains("shards [1] of step 0 unanswered after 5.2 s"), reason)
        XCTAssertEqual(tasks(commands), [0: [1]])
        XCTAssertEqual(s.workers[1]?.isSuspect, true)
        XCTAssertEqual(s.workers[1]?.timesLost, 1)
        // Suspect: heartbeats and even a hello do not bring it back; they earn it a probation
        // shard (a copy of one worker 0 holds), and an answer to that does.
        XCTAssertEqual(s.handle(.workerHeard(1, answeredTask: false), now: 5.3),
                       [.sendWeights(1, step: 0), .sendTask(1, step: 0, shard: 1, reason: .probation)])
        XCTAssertEqual(s.handle(.workerHeard(1, answeredTask: false), now: 5.35), [], "one at a time")
        XCTAssertEqual(s.handle(.workerJoined(1), now: 5.4),
                       [.sendWeights(1, step: 0), .sendTask(1, step: 0, shard: 1, reason: .probation)],
                       "a new session lost the copy: another")
        XCTAssertFalse(s.isAlive(1))
        XCTAssertEqual(s.verdict(from: 1, step: 0, shard: 1, shardCount: 2), .accept)
        XCTAssertEqual(s.handle(.workerHeard(1, answeredTask: true), now: 5.5), [.welcomeBack(1)])
        XCTAssertEqual(s.workers[1]?.timesRejoined, 1)
        XCTAssertEqual(s.verdict(from: 0, step: 0, shard: 1, shardCount: 2), .accept)
    }

    func testSilentIdleWorkerIsLostAndComesBackWhenHeard() {
        var s = scheduler(workers: 2)
        _ = s.handle(.workerHeard(0, answeredTask: false), now: 5.5)
        let commands = s.handle(.tick, now: 5.5 + 0.5)
        XCTAssertEqual(lost(commands), [1])
        XCTAssertTrue(commands.contains(.sendHeartbeat(0, step: 0)))
        XCTAssertEqual(s.workers[1]?.isSuspect, false)
        XCTAssertEqual(s.handle(.workerHeard(1, answeredTask: false), now: 6.1), [.welcomeBack(1)])
        // Back, it gets work at the next step like any other.
        XCTAssertEqual(tasks(s.handle(.stepStarted(step: 0, shards: [0, 1]), now: 6.2)), [0: [0], 1: [1]])
    }

    func testHeartbeatOnlyAfterSilenceFromUs() {
        var s = scheduler(workers: 1)
        XCTAssertEqual(s.handle(.tick, now: 0.9), [])
        XCTAssertEqual(s.handle(.tick, now: 1.1), [.sendHeartbeat(0, step: 0)])
        XCTAssertEqual(s.handle(.tick, now: 1.5), [])
    }

    func testFailedLinkMovesShardsToTheWorkerWithFewest() {
        var s = scheduler(workers: 3)
        _ = s.handle(.stepStarted(step: 2, shards: [0, 1, 2, 3, 4, 5]), now: 0)
        _ = s.handle(.resultAccepted(2, shard: 2), now: 0.1)
        let commands = s.handle(.linkFailed(0, reason: "its pipe closed"), now: 0.2)
        XCTAssertEqual(commands.first, .declareLost(0, reason: "its pipe closed"))
        // Worker 2 holds one (5), worker 1 two (1, 4): 0 goes to 2, then 3 to whoever has fewer, by index.
        XCTAssertEqual(tasks(commands), [2: [0], 1: [3]])
        XCTAssertEqual(s.verdict(from: 0, step: 2, shard: 0, shardCount: 6), .stale)
    }

    func testPausesBelowMinimumAndStartsWhenEnoughJoin() {
        var s = scheduler(minimum: 2, workers: 1)
        let commands = s.handle(.stepStarted(step: 0, shards: [0, 1]), now: 0)
        XCTAssertEqual(commands, [.waitForWorkers(live: 1, needed: 2, waitedSeconds: 0)])
        XCTAssertTrue(s.isWaitingForWorkers)
        _ = s.handle(.workerHeard(0, answeredTask: false), now: 10)
        XCTAssertEqual(s.handle(.tick, now: 10.5), [.sendHeartbeat(0, step: 0), .waitForWorkers(live: 1, needed: 2, waitedSeconds: 10.5)])
        let joined = s.handle(.workerJoined(1), now: 11)
        XCTAssertEqual(tasks(joined), [0: [0], 1: [1]])
        XCTAssertFalse(s.isWaitingForWorkers)
    }

    func testAllWorkersLostWaitsReportsRespawnsAndGivesUp() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 3, shards: [0, 1]), now: 0)
        _ = s.handle(.linkFailed(0, reason: "exited"), now: 1)
        let last = s.handle(.linkFailed(1, reason: "exited"), now: 2)
        XCTAssertEqual(Array(last.suffix(2)), [.waitForWorkers(live: 0, needed: 1, waitedSeconds: 0), .respawnWorkers])
        XCTAssertEqual(s.handle(.tick, now: 11), [])
        XCTAssertEqual(s.handle(.tick, now: 12), [.waitForWorkers(live: 0, needed: 1, waitedSeconds: 10), .respawnWorkers])
        let end = s.handle(.tick, now: 62)
        guard case let .giveUp(reason)? = end.first else { return XCTFail("\(end)") }
        XCTAssertTrue(reason.contains("no progress for 60 s: 0 live workers, 1 needed to continue step 3"), reason)
        XCTAssertTrue(reason.contains("--no-workers-timeout"))
        XCTAssertEqual(s.handle(.tick, now: 80), [], "gives up once")
    }

    func testWorkerReturningToAnEmptyRunTakesEveryOpenShard() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 0, shards: [0, 1, 2]), now: 0)
        _ = s.handle(.resultAccepted(1, shard: 1), now: 0.1)
        _ = s.handle(.linkFailed(0, reason: "gone"), now: 0.2)
        _ = s.handle(.linkFailed(1, reason: "gone"), now: 0.2)
        let commands = s.handle(.workerJoined(1), now: 3)
        XCTAssertEqual(commands.first, .welcomeBack(1))
        XCTAssertEqual(tasks(commands), [1: [0, 2]])
        XCTAssertTrue(commands.contains(.sendWeights(1, step: 0)))
        XCTAssertFalse(s.isWaitingForWorkers)
        XCTAssertEqual(s.handle(.tick, now: 3.5), [])
    }

    func testStaleDuplicateAndForeignResults() {
        var s = scheduler(workers: 2)
        XCTAssertEqual(s.verdict(from: 0, step: 0, shard: 0, shardCount: 2), .stale, "no step yet")
        _ = s.handle(.stepStarted(step: 4, shards: [0, 1]), now: 0)
        XCTAssertEqual(s.verdict(from: 0, step: 3, shard: 0, shardCount: 2), .stale)
        XCTAssertEqual(s.verdict(from: 0, step: 5, shard: 0, shardCount: 2),
                       .reject(reason: "result for step 5, which has not started (current 4)"))
        XCTAssertEqual(s.verdict(from: 0, step: 4, shard: 2, shardCount: 2), .reject(reason: "result for shard 2, but a step has 2"))
        XCTAssertEqual(s.verdict(from: 0, step: 4, shard: 1, shardCount: 2),
                       .reject(reason: "result for shard 1 of step 4, which it was not given"))
        XCTAssertEqual(s.verdict(from: 0, step: 4, shard: 0, shardCount: 2), .accept)
        _ = s.handle(.resultAccepted(0, shard: 0), now: 0.1)
        XCTAssertEqual(s.verdict(from: 0, step: 4, shard: 0, shardCount: 2), .stale, "a duplicate")
        XCTAssertEqual(s.openShards, [1])
    }

    /// Eight quick steps teach the scheduler what a shard takes; then worker 1 stalls.
    func testLateShardIsRerunOnAnIdleWorkerAndTheFirstResultWins() {
        var (s, now) = taughtScheduler()
        XCTAssertEqual(s.settings.speculation.lateAfter(recentShardSeconds: s.recentShardSeconds) ?? 0, 0.05, accuracy: 1e-9)
        _ = s.handle(.stepStarted(step: 4, shards: [0, 1]), now: now)
        _ = s.handle(.resultAccepted(0, shard: 0), now: now + 0.01)
        XCTAssertEqual(s.handle(.tick, now: now + 0.04), [], "not late yet")
        let commands = s.handle(.tick, now: now + 0.06)
        XCTAssertEqual(commands, [.sendTask(0, step: 4, shard: 1, reason: .rerun(late: 1))])
        XCTAssertEqual(s.handle(.tick, now: now + 0.2), [], "a shard is re-run once")
        XCTAssertEqual(s.verdict(from: 0, step: 4, shard: 1, shardCount: 2), .accept)
        XCTAssertEqual(s.verdict(from: 1, step: 4, shard: 1, shardCount: 2), .accept)
        _ = s.handle(.resultAccepted(0, shard: 1), now: now + 0.07)
        XCTAssertEqual(s.verdict(from: 1, step: 4, shard: 1, shardCount: 2), .stale, "the late one lost the race")
        XCTAssertEqual(s.workers[1]?.outstanding, [], "and no deadline runs against it")
        XCTAssertEqual(s.workers[1]?.timesLate, 1)
        XCTAssertEqual(s.rerunCount, 1)
        XCTAssertTrue(s.isAlive(1))
        // Its late answer, stale as it is, shows it is alive: it owes nothing any more.
        XCTAssertNotNil(s.workers[1]?.lateSince)
        _ = s.handle(.workerHeard(1, answeredTask: true), now: now + 0.3)
        XCTAssertNil(s.workers[1]?.lateSince)
    }

    /// A peer that takes shards and never answers, while others cover for it every step, is
    /// still lost (and suspect) once the worker timeout passes: re-runs do not hide it.
    func testWorkerThatNeverAnswersIsLostDespiteReruns() {
        var (s, now) = taughtScheduler()
        _ = s.handle(.stepStarted(step: 4, shards: [0, 1]), now: now)
        _ = s.handle(.resultAccepted(0, shard: 0), now: now + 0.01)
        XCTAssertEqual(s.handle(.tick, now: now + 0.07), [.sendTask(0, step: 4, shard: 1, reason: .rerun(late: 1))])
        _ = s.handle(.resultAccepted(0, shard: 1), now: now + 0.08)
        now += 0.1
        var lostAt: Double?
        for step in 5..<200 where lostAt == nil {
            // Late, it gets no new shards; the others take them all.
            let started = s.handle(.stepStarted(step: step, shards: [0, 1]), now: now)
            XCTAssertEqual(tasks(started)[1], nil, "step \(step): \(started)")
            _ = s.handle(.workerHeard(0, answeredTask: true), now: now + 0.01)
            _ = s.handle(.resultAccepted(0, shard: 0), now: now + 0.01)
            _ = s.handle(.resultAccepted(0, shard: 1), now: now + 0.01)
            _ = s.handle(.workerHeard(1, answeredTask: false), now: now + 0.02)  // heartbeats only
            if lost(s.handle(.tick, now: now + 0.05)) == [1] { lostAt = now + 0.05 }
            now += 0.1
        }
        XCTAssertEqual(lostAt ?? 0, 5.09, accuracy: 0.06, "lost once the timeout passed since its late shard was given")
        XCTAssertEqual(s.workers[1]?.isSuspect, true)
        XCTAssertEqual(s.rerunCount, 1)
    }

    /// A hello from a known worker starts a new session: the tasks and weights it had are
    /// gone, so its shards go out again, weights first.
    func testHelloFromAKnownWorkerSendsItsShardsAgain() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 7, shards: [0, 1]), now: 0)
        let commands = s.handle(.workerJoined(1), now: 0.5)
        XCTAssertEqual(commands, [.sendWeights(1, step: 7), .sendTask(1, step: 7, shard: 1, reason: .reassigned)])
        XCTAssertEqual(s.workers[1]?.timesRejoined, 0, "it was never lost")
    }

    /// While the run waits for workers, a suspect's new session (a hello) lets it back, or
    /// the run would wait for workers that are there; otherwise a hello is no answer.
    func testASuspectsHelloCountsOnlyWhileTheRunWaits() {
        var s = scheduler(workers: 1)
        _ = s.handle(.stepStarted(step: 0, shards: [0]), now: 0)
        _ = s.handle(.workerHeard(0, answeredTask: false), now: 5)
        XCTAssertEqual(lost(s.handle(.tick, now: 5.1)), [0])
        XCTAssertTrue(s.isWaitingForWorkers)
        let commands = s.handle(.workerJoined(0), now: 6)
        XCTAssertEqual(commands, [.welcomeBack(0), .sendWeights(0, step: 0), .sendTask(0, step: 0, shard: 0, reason: .reassigned)])
        XCTAssertFalse(s.isWaitingForWorkers)

        // Below --min-workers with one live worker, a cut-off worker's new session brings it back.
        var paused = scheduler(minimum: 2, workers: 2)
        _ = paused.handle(.stepStarted(step: 0, shards: [0, 1]), now: 0)
        _ = paused.handle(.workerHeard(0, answeredTask: true), now: 1)
        _ = paused.handle(.resultAccepted(0, shard: 0), now: 1)
        XCTAssertEqual(lost(paused.handle(.tick, now: 5.1)), [1])
        XCTAssertEqual(paused.handle(.workerJoined(1), now: 5.2), [.sendWeights(1, step: 0), .sendTask(1, step: 0, shard: 1, reason: .probation)],
                       "not waiting (one live, a step under way): still suspect, on probation")
        _ = paused.handle(.resultAccepted(0, shard: 1), now: 5.3)
        XCTAssertTrue(paused.handle(.stepStarted(step: 1, shards: [0, 1]), now: 5.4).contains(.waitForWorkers(live: 1, needed: 2, waitedSeconds: 0)))
        XCTAssertEqual(tasks(paused.handle(.workerJoined(1), now: 6)), [0: [0], 1: [1]])
    }

    func testNoRerunWithoutAnIdleWorkerOrWithTooFewSamples() {
        var s = scheduler(workers: 2, speculation: true)
        _ = s.handle(.stepStarted(step: 0, shards: [0, 1]), now: 0)
        _ = s.handle(.resultAccepted(0, shard: 0), now: 0.01)
        XCTAssertEqual(s.handle(.tick, now: 0.9), [], "no history yet")
        var policy = SpeculationPolicy()
        XCTAssertNil(policy.lateAfter(recentShardSeconds: [0.1, 0.1]))
        policy.minimumSamples = 4
        XCTAssertEqual(policy.lateAfter(recentShardSeconds: [0.01, 0.02, 0.03, 1.0]), 3.0, "the 90th percentile of four is the largest")
        XCTAssertEqual(policy.lateAfter(recentShardSeconds: Array(repeating: 0.001, count: 4)), 0.05, "the floor")
        policy.isEnabled = false
        XCTAssertNil(policy.lateAfter(recentShardSeconds: Array(repeating: 0.1, count: 10)))
    }

    /// A worker once late (stopped past the deadline) is back to full work once it answers
    /// its probation shard in time; until then it holds one copy at a time.
    func testLateWorkerEarnsFullWorkBackOnProbation() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 0, shards: [0, 1, 2, 3]), now: 0)
        _ = s.handle(.workerHeard(0, answeredTask: true), now: 0.1)
        _ = s.handle(.resultAccepted(0, shard: 0), now: 0.1)
        _ = s.handle(.resultAccepted(0, shard: 2), now: 0.1)
        XCTAssertEqual(lost(s.handle(.tick, now: 5.1)), [1])
        XCTAssertEqual(s.workers[0]?.outstanding, [1, 3])
        // It resumes with a new session: a copy of the highest open shard, nothing more.
        XCTAssertEqual(tasks(s.handle(.workerJoined(1), now: 5.2)), [1: [3]])
        XCTAssertEqual(s.workers[1]?.outstanding, [3])
        XCTAssertEqual(s.liveWorkers, [0], "on probation, not live")
        // Its answer, in time and first, counts and brings it back.
        XCTAssertEqual(s.handle(.workerHeard(1, answeredTask: true), now: 5.3), [.welcomeBack(1)])
        XCTAssertEqual(s.verdict(from: 1, step: 0, shard: 3, shardCount: 4), .accept)
        _ = s.handle(.resultAccepted(1, shard: 3), now: 5.3)
        XCTAssertEqual(s.verdict(from: 0, step: 0, shard: 3, shardCount: 4), .stale)
        _ = s.handle(.resultAccepted(0, shard: 1), now: 5.4)
        XCTAssertEqual(tasks(s.handle(.stepStarted(step: 1, shards: [0, 1, 2, 3]), now: 5.5)), [0: [0, 2], 1: [1, 3]], "full work")
        XCTAssertEqual(s.workers[1]?.isSuspect, false)
    }

    /// A suspect that only heartbeats never holds more than one shard, each copy for one
    /// timeout at most, and the steps never wait for it.
    func testSilentSuspectNeverHoldsMoreThanOneShardAndStallsNothing() {
        var s = scheduler(workers: 2)
        _ = s.handle(.stepStarted(step: 0, shards: [0, 1]), now: 0)
        _ = s.handle(.workerHeard(0, answeredTask: true), now: 0.1)
        _ = s.handle(.resultAccepted(0, shard: 0), now: 0.1)
        XCTAssertEqual(lost(s.handle(.tick, now: 5.1)), [1])
        _ = s.handle(.resultAccepted(0, shard: 1), now: 5.2)
        var now = 5.3
        var probationTasks = 0
        for step in 1..<200 {
            var commands = s.handle(.stepStarted(step: step, shards: [0, 1, 2]), now: now)
            commands += s.handle(.workerHeard(1, answeredTask: false), now: now + 0.01)
            commands += s.handle(.tick, now: now + 0.02)
            probationTasks += tasks(commands)[1]?.count ?? 0
            XCTAssertLessThanOrEqual(s.workers[1]?.outstanding.count ?? 0, 1, "step \(step)")
            XCTAssertEqual(Set(tasks(commands)[0] ?? []).union(s.workers[0]?.outstanding ?? []), [0, 1, 2], "worker 0 holds the whole step \(step)")
            // The step ends with worker 0's answers alone.
            _ = s.handle(.workerHeard(0, answeredTask: true), now: now + 0.03)
            for shard in 0..<3 { _ = s.handle(.resultAccepted(0, shard: shard), now: now + 0.03) }
            XCTAssertTrue(s.openShards.isEmpty)
            now += 0.1
        }
        // 19.9 s of steps with a 5 s timeout: a copy at most every 5 s.
        XCTAssertGreaterThanOrEqual(probationTasks, 3)
        XCTAssertLessThanOrEqual(probationTasks, 5)
        XCTAssertFalse(s.isAlive(1))
        XCTAssertEqual(s.workers[1]?.timesLost, 1, "lost once; expired copies lose nothing more")
    }
}
