using ActorTrain.Cli;

return await ActorTrainCommand.RunAsync(args, Console.Out, Console.Error);
