"""Class lists: UCF-101's 101 action names, in the order of its classInd.txt, and their text form."""
from __future__ import annotations

import re

UCF101_CLASSES: tuple[str, ...] = tuple(sorted((
    "ApplyEyeMakeup ApplyLipstick Archery BabyCrawling BalanceBeam BandMarching BaseballPitch Basketball "
    "BasketballDunk BenchPress Biking Billiards BlowDryHair BlowingCandles BodyWeightSquats Bowling "
    "BoxingPunchingBag BoxingSpeedBag BreastStroke BrushingTeeth CleanAndJerk CliffDiving CricketBowling "
    "CricketShot CuttingInKitchen Diving Drumming Fencing FieldHockeyPenalty FloorGymnastics FrisbeeCatch "
    "FrontCrawl GolfSwing Haircut Hammering HammerThrow HandstandPushups HandstandWalking HeadMassage HighJump "
    "HorseRace HorseRiding HulaHoop IceDancing JavelinThrow JugglingBalls JumpingJack JumpRope Kayaking "
    "Knitting LongJump Lunges MilitaryParade Mixing MoppingFloor Nunchucks ParallelBars PizzaTossing "
    "PlayingCello PlayingDaf PlayingDhol PlayingFlute PlayingGuitar PlayingPiano PlayingSitar PlayingTabla "
    "PlayingViolin PoleVault PommelHorse PullUps Punch PushUps Rafting RockClimbingIndoor RopeClimbing Rowing "
    "SalsaSpin ShavingBeard Shotput SkateBoarding Skiing Skijet SkyDiving SoccerJuggling SoccerPenalty "
    "StillRings SumoWrestling Surfing Swing TableTennisShot TaiChi TennisSwing ThrowDiscus TrampolineJumping "
    "Typing UnevenBars VolleyballSpiking WalkingWithDog WallPushups WritingOnBoard YoYo"
).split(), key=str.lower))  # classInd.txt orders names case-insensitively (Hammering before HammerThrow)


def class_text(name: str) -> str:
    """The text form used for text conditioning: "ApplyEyeMakeup" -> "apply eye makeup"."""
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name).lower()


def sorted_classes(names) -> list[str]:
    """Class names in UCF-101's order convention (case-insensitive), so label ids match classInd.txt."""
    return sorted(set(names), key=str.lower)
