import Foundation
import MNISTData
import NeuralNet
import Wire

/// A task whose header, labels and sample range were checked against the model and the
/// coordinator's segment: computing it cannot fail on what the coordinator sent.
struct ValidatedTask {
    /// Where the samples (labels, then pixels) are: in the message's frame, mapped from
    /// the coordinator's batch segment (range checked), or gathered from this worker's own
    /// training set by an index task's indices.
    enum Samples {
        case frame(ZMQMessage)
        case mapped(UnsafeRawPointer)
        case gathered(SharedBuffer)
    }

    let step: UInt64
    let header: TaskHeader
    let samples: Samples

    var rows: Int { Int(header.sampleCount) }

    /// Runs `body` on the samples' first byte (the first label).
    func withSamples<R>(_ body: (UnsafeRawPointer) -> R) -> R {
        switch samples {
        case let .frame(frame): frame.withUnsafeBytes { body($0.baseAddress!) }
        case let .mapped(pointer): body(pointer)
        case let .gathered(buffer): body(buffer.pointer)
        }
    }

    /// The pixels, after the labels.
    func withPixels<R>(_ body: (UnsafePointer<UInt8>) -> R) -> R {
        withSamples { body($0.assumingMemoryBound(to: UInt8.self) + rows) }
    }
}

/// Taking in the coordinator's messages: weights, tasks (each checked alone, so that a bad
/// one is rejected without touching the others), and the notices that end or restart the
/// session. What fails to decode or check is rejected and counted; a `WorkerFailure` (this
/// worker's own) goes up to `run`.
extension WorkerNode {
    func handle(_ frames: [ZMQMessage]) throws -> WorkerExit? {
        do {
            let envelope = try Envelope(frames: frames[...])
            switch envelope.type {
            case .weights:
                try receiveWeights(envelope)
            case .task, .indexTask:
                try receiveTask(envelope)
            case .shutdown:
                return .shutdown(reason: try Notice(envelope).reason)
            case .reject:
                let reason = try Notice(envelope).reason
                guard reason == WireProtocol.unknownWorkerReason else { return .rejected(reason: reason) }
                logger.notice("the coordinator does not know this worker (it restarted?); joining again")
                if let exit = try connect(rejoining: true) { return exit }
            case .heartbeat, .welcome, .challenge:
                break
            case .serverMap, .serveAssignment, .stepPlan, .snapshotRequest, .shardsInSegments:
                try handleParameterService(envelope)
            case .hello, .result, .attach, .serveOffer, .weightsRange, .gradientRange, .receipt, .applied,
                 .snapshotAnswer, .rangeRefused, .rangeSegment, .receipts:
                throw ProtocolError.unexpected(envelope.type)
            }
        } catch let failure as WorkerFailure {
            throw failure
        } catch {
            noteRejected(error)
        }
        return nil
    }

    /// Takes a step's weights, from the message or the coordinator's segment, then runs the
    /// tasks that came ahead of them; older waiting tasks never will.
    private func receiveWeights(_ envelope: Envelope) throws {
        guard let model else { return }
        let slot: Int?
        if let weightsSegment, case let (.fp32, shared?) = try WeightsMessage.header(envelope, expectedCount: model.spec.parameterCount) {
            // fp32 weights in the coordinator's segment: compute straight from its
            // read-only mapping, no copy. The coordinator writes the other parity's
            // slot next, never this one while this step runs.
            model.parameterSource = try weightsSegment.mappedSlot(shared).assumingMemoryBound(to: Float.self)
            slot = shared
        } else {
            model.parameterSource = nil
            slot = try model.parameters.withUnsafeMutableBufferPointer { parameters in
                try WeightsMessage.decode(envelope, expectedCount: parameters.count, into: parameters.baseAddress!,
                                          shared: weightsSegment, scratch: &sharedScratch)
            }
        }
        // The coordinator sends weights through memory once it has our segment, which
        // it has open then: nobody needs its name any more.
        sharedActive = slot != nil && gradientSegment != nil
        if sharedActive { gradientSegment?.unlinkName() }
        // Parameter servers on this host: the coordinator has the weights from them, and our
        // gradients reach them through it; their sockets would carry the same values again.
        if sharedActive && !serverLinks.isEmpty { serverLinks = [] }
        try weightsArrived(step: envelope.step)
    }

    /// The weights of `step` are in: the tasks that came ahead of them run, older ones never will.
    func weightsArrived(step: UInt64) throws {
        weightsStep = step
        let ready = waitingTasks.filter { $0.step == step }
        waitingTasks.removeAll { $0.step <= step }
        for task in ready { try run(task) }
    }

    /// Runs a task of the step whose weights we hold, or keeps one sent ahead of its
    /// weights; drops one of a step already past.
    private func receiveTask(_ envelope: Envelope) throws {
        if let weightsStep, envelope.step == weightsStep {
            try run(envelope)
        } else if weightsStep.map({ envelope.step > $0 }) ?? true {
            waitingTasks.append(envelope)
            if waitingTasks.count > Self.maximumWaitingTasks { waitingTasks.removeFirst() }
            if waitingTasks.count == 1 { prepareInput(of: envelope) }
        }
    }

    /// Checks one task and computes it: a task that fails its checks is rejected and
    /// counted on its own, and the step's other tasks go on.
    private func run(_ envelope: Envelope) throws {
        let task: ValidatedTask
        do {
            task = try validate(envelope)
        } catch {
            noteRejected(error)
            return
        }
        try compute(task)
    }

    /// Decodes a task's header, checks its sample range (in the frame or the coordinator's
    /// batch slot) and copies and checks its labels.
    private func validate(_ envelope: Envelope) throws -> ValidatedTask {
        guard let model else { throw ProtocolError.unexpected(envelope.type) }
        if envelope.type == .indexTask {
            let task = try gather(envelope, model: model)
            try copyLabels(of: task, classes: model.spec.layers[model.spec.layers.count - 1].outputSize)
            return task
        }
        let (header, samples) = try TaskHeader.decode(envelope, featureCount: model.spec.inputSize,
                                                      maximumSamples: WireLimits.maximumSamples(for: model.spec))
        let task: ValidatedTask
        switch samples {
        case let .frame(frame):
            task = ValidatedTask(step: envelope.step, header: header, samples: .frame(frame))
        case let .shared(slot, offset):
            guard let batchSegment else {
                throw ProtocolError.malformed(.task, "samples in shared slot \(slot), but no batch segment is open")
            }
            let mapped = try batchSegment.mapped(slot: slot, offset: offset, byteCount: header.sampleBytes)
            task = ValidatedTask(step: envelope.step, header: header, samples: .mapped(mapped))
        }
        try copyLabels(of: task, classes: model.spec.layers[model.spec.layers.count - 1].outputSize)
        return task
    }

    /// Checks an index task against this worker's training set and gathers its samples
    /// (labels, then pixels, as a task carries them) from it.
    private func gather(_ envelope: Envelope, model: Sequential) throws -> ValidatedTask {
        guard let trainingSet = options.trainingSet else {
            throw ProtocolError.malformed(.indexTask, "this worker was started without --data")
        }
        // The stride the samples are gathered with: another model's width would misplace them.
        guard trainingSet.featureCount == model.spec.inputSize else {
            throw ProtocolError.malformed(.indexTask, "this worker's training set has \(trainingSet.featureCount) features per sample, the model takes \(model.spec.inputSize)")
        }
        let task = try IndexTask.decode(envelope, featureCount: model.spec.inputSize,
                                        maximumSamples: WireLimits.maximumSamples(for: model.spec),
                                        sampleCount: trainingSet.count)
        let rows = task.indices.count
        let buffer = SharedBuffer(byteCount: rows * (1 + trainingSet.featureCount))
        let labels = buffer.pointer.assumingMemoryBound(to: UInt8.self)
        trainingSet.gather(task.indices.map { Int($0) }[...], pixels: labels + rows, labels: labels)
        return ValidatedTask(step: envelope.step, header: task.header, samples: .gathered(buffer))
    }

    /// Copies a task's labels out of its frame or the coordinator's segment (which could
    /// change under us) and checks each against the class count: the loss indexes with them.
    private func copyLabels(of task: ValidatedTask, classes: Int) throws {
        let rows = task.rows
        if labelBuffer.byteCount < rows { labelBuffer = SharedBuffer(byteCount: rows) }
        task.withSamples { labelBuffer.pointer.copyMemory(from: $0, byteCount: rows) }
        let labels = UnsafeBufferPointer(start: labelBuffer.pointer.assumingMemoryBound(to: UInt8.self), count: rows)
        if let bad = labels.first(where: { Int($0) >= classes }) {
            throw ProtocolError.malformed(.task, "label \(bad), but the model has \(classes) classes")
        }
    }

    /// Scales a task's pixels into the model's workspace ahead of its weights; a task that
    /// does not pass its checks is left for `run` to refuse.
    private func prepareInput(of envelope: Envelope) {
        guard let model, let task = try? validate(envelope) else { return }
        preparedInput = task.withPixels { pixels in
            (envelope.step, task.header.shard, model.scaleInput(pixels: pixels, rows: task.rows))
        }
    }
}
