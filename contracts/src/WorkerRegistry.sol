// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

/// @title WorkerRegistry
/// @notice Binds a worker's chain address to its libp2p identity (raw 32-byte Ed25519
///         public key) and holds the worker's stake. Stake leaves only through a timed
///         unbonding, or through `slash`, which only the JobEscrow may call.
/// @dev The peer key is not proven on chain (Ed25519 cannot be checked cheaply here).
///      A coordinator must trust a capability ad only if it is signed by the peer key AND
///      names the chain address the registry binds to that key. Binding someone else's
///      key is possible but only denies that key to its owner (squatting), it never lets
///      the squatter impersonate them.
///      Slashed value is credited to the beneficiary inside this contract and pulled
///      with `withdraw()` (pull payment), so this contract's balance always equals the
///      sum of all stakes plus all unwithdrawn credits.
contract WorkerRegistry is ReentrancyGuard {
    // ─────────────────────────────────────────────────────────────────────────
    // Types
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice A worker's record. `unbondingAt == 0` means not unbonding; otherwise it is
    ///         the timestamp from which `withdrawStake()` pays out.
    struct Worker {
        bytes32 peerKey;
        uint256 stake;
        uint64 unbondingAt;
        bool registered;
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Errors
    // ─────────────────────────────────────────────────────────────────────────

    error ZeroAddress();
    error ZeroPeerKey();
    error ZeroAmount();
    error NotDeployer(address caller);
    error NotEscrow(address caller);
    error EscrowAlreadySet(address escrow);
    error AlreadyRegistered(address worker);
    error NotRegistered(address worker);
    error PeerKeyTaken(bytes32 peerKey, address owner);
    error StakeTooLow(uint256 stake, uint256 minStake);
    error AlreadyUnbonding(address worker);
    error NotUnbonding(address worker);
    error UnbondingNotOver(uint64 unbondingAt, uint256 nowTs);
    error NothingToSlash(address worker);
    error NothingToWithdraw(address payee);
    error TransferFailed(address to, uint256 amount);

    // ─────────────────────────────────────────────────────────────────────────
    // Events
    // ─────────────────────────────────────────────────────────────────────────

    event EscrowSet(address indexed escrow);
    event WorkerRegistered(address indexed worker, bytes32 indexed peerKey, uint256 stake);
    event StakeAdded(address indexed worker, uint256 amount, uint256 newStake);
    event UnbondingStarted(address indexed worker, uint64 unbondingAt);
    event StakeWithdrawn(address indexed worker, bytes32 indexed peerKey, uint256 amount);
    event Slashed(address indexed worker, uint256 amount, address indexed beneficiary, uint256 remainingStake);
    event Withdrawn(address indexed payee, uint256 amount);

    // ─────────────────────────────────────────────────────────────────────────
    // Storage
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice Smallest stake for which a worker counts as staked.
    uint256 public immutable minStake;
    /// @notice Seconds between `beginUnbond()` and the earliest `withdrawStake()`.
    uint64 public immutable unbondingPeriod;
    /// @notice The address that may call `setEscrow` once.
    address public immutable deployer;
    /// @notice The JobEscrow, the only caller of `slash`. Zero until `setEscrow`.
    address public escrow;

    mapping(address worker => Worker) private _workers;
    mapping(bytes32 peerKey => address worker) private _peerKeyOwner;
    mapping(address payee => uint256 amount) private _credits;

    /// @param minStake_ Smallest stake for which a worker counts as staked.
    /// @param unbondingPeriod_ Seconds a worker waits between `beginUnbond` and `withdrawStake`.
    constructor(uint256 minStake_, uint64 unbondingPeriod_) {
        minStake = minStake_;
        unbondingPeriod = unbondingPeriod_;
        deployer = msg.sender;
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Admin
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice Sets the JobEscrow allowed to slash. Callable once, by the deployer only;
    ///         afterwards the escrow is locked for the life of the registry.
    /// @param escrow_ The JobEscrow contract address.
    function setEscrow(address escrow_) external {
        if (msg.sender != deployer) revert NotDeployer(msg.sender);
        if (escrow != address(0)) revert EscrowAlreadySet(escrow);
        if (escrow_ == address(0)) revert ZeroAddress();
        escrow = escrow_;
        emit EscrowSet(escrow_);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Worker lifecycle
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice Registers msg.sender as a worker bound to `peerKey` and stakes msg.value.
    /// @param peerKey The worker's raw 32-byte Ed25519 public key (its libp2p identity).
    ///        One key binds to one address only.
    function register(bytes32 peerKey) external payable {
        if (peerKey == bytes32(0)) revert ZeroPeerKey();
        if (_workers[msg.sender].registered) revert AlreadyRegistered(msg.sender);
        address owner = _peerKeyOwner[peerKey];
        if (owner != address(0)) revert PeerKeyTaken(peerKey, owner);
        if (msg.value < minStake) revert StakeTooLow(msg.value, minStake);

        _workers[msg.sender] = Worker({peerKey: peerKey, stake: msg.value, unbondingAt: 0, registered: true});
        _peerKeyOwner[peerKey] = msg.sender;
        emit WorkerRegistered(msg.sender, peerKey, msg.value);
    }

    /// @notice Adds msg.value to the caller's stake (e.g. to top up after a slash).
    ///         Not allowed while unbonding.
    function stake() external payable {
        Worker storage w = _workers[msg.sender];
        if (!w.registered) revert NotRegistered(msg.sender);
        if (w.unbondingAt != 0) revert AlreadyUnbonding(msg.sender);
        if (msg.value == 0) revert ZeroAmount();
        uint256 newStake = w.stake + msg.value;
        w.stake = newStake;
        emit StakeAdded(msg.sender, msg.value, newStake);
    }

    /// @notice Starts unbonding: the caller stops counting as staked at once and may
    ///         `withdrawStake()` after `unbondingPeriod` seconds. It can still be slashed
    ///         until then. There is no way back; register again after withdrawing.
    function beginUnbond() external {
        Worker storage w = _workers[msg.sender];
        if (!w.registered) revert NotRegistered(msg.sender);
        if (w.unbondingAt != 0) revert AlreadyUnbonding(msg.sender);
        uint64 readyAt = uint64(block.timestamp) + unbondingPeriod;
        w.unbondingAt = readyAt;
        emit UnbondingStarted(msg.sender, readyAt);
    }

    /// @notice Pays the caller's whole remaining stake once unbonding is over, deletes the
    ///         worker record and frees its peer key.
    function withdrawStake() external nonReentrant {
        Worker memory w = _workers[msg.sender];
        if (!w.registered) revert NotRegistered(msg.sender);
        if (w.unbondingAt == 0) revert NotUnbonding(msg.sender);
        if (block.timestamp < w.unbondingAt) revert UnbondingNotOver(w.unbondingAt, block.timestamp);

        delete _workers[msg.sender];
        delete _peerKeyOwner[w.peerKey];
        emit StakeWithdrawn(msg.sender, w.peerKey, w.stake);
        _send(msg.sender, w.stake);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Slashing (escrow only) and pull payments
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice Moves up to `amount` of `worker`'s stake to `beneficiary`'s credit. Only the
    ///         JobEscrow may call it; it has already checked the evidence. Works during
    ///         unbonding too.
    /// @param worker The worker to slash.
    /// @param amount Requested amount; capped at the worker's stake.
    /// @param beneficiary Who may `withdraw()` the slashed value.
    /// @return slashed The amount actually moved (min(amount, stake), never zero).
    function slash(address worker, uint256 amount, address beneficiary) external returns (uint256 slashed) {
        // Before setEscrow, escrow is zero and no caller matches.
        if (msg.sender != escrow) revert NotEscrow(msg.sender);
        if (beneficiary == address(0)) revert ZeroAddress();
        Worker storage w = _workers[worker];
        if (!w.registered) revert NotRegistered(worker);
        uint256 current = w.stake;
        slashed = amount < current ? amount : current;
        if (slashed == 0) revert NothingToSlash(worker);

        // unchecked: slashed <= current by construction above.
        unchecked {
            w.stake = current - slashed;
        }
        _credits[beneficiary] += slashed;
        emit Slashed(worker, slashed, beneficiary, current - slashed);
    }

    /// @notice Pays the caller all of its credits (slashed stake credited to it).
    function withdraw() external nonReentrant {
        uint256 amount = _credits[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        _credits[msg.sender] = 0;
        emit Withdrawn(msg.sender, amount);
        _send(msg.sender, amount);
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Views
    // ─────────────────────────────────────────────────────────────────────────

    /// @notice True iff `worker` is registered, not unbonding, and has stake >= minStake.
    function isStaked(address worker) external view returns (bool) {
        Worker storage w = _workers[worker];
        return w.registered && w.unbondingAt == 0 && w.stake >= minStake;
    }

    /// @notice True iff `worker` has a record (staked, under-staked or unbonding).
    function isRegistered(address worker) external view returns (bool) {
        return _workers[worker].registered;
    }

    /// @notice The Ed25519 peer key bound to `worker` (zero if none).
    function peerKeyOf(address worker) external view returns (bytes32) {
        return _workers[worker].peerKey;
    }

    /// @notice The address bound to `peerKey` (zero if none).
    function workerOfPeerKey(bytes32 peerKey) external view returns (address) {
        return _peerKeyOwner[peerKey];
    }

    /// @notice Current stake of `worker` in wei.
    function stakeOf(address worker) external view returns (uint256) {
        return _workers[worker].stake;
    }

    /// @notice The full record of `worker` (all zero if not registered).
    function getWorker(address worker) external view returns (Worker memory) {
        return _workers[worker];
    }

    /// @notice Unwithdrawn credits of `payee` (slashed stake credited to it).
    function creditOf(address payee) external view returns (uint256) {
        return _credits[payee];
    }

    // ─────────────────────────────────────────────────────────────────────────
    // Internal
    // ─────────────────────────────────────────────────────────────────────────

    function _send(address to, uint256 amount) private {
        (bool ok,) = to.call{value: amount}("");
        if (!ok) revert TransferFailed(to, amount);
    }
}
